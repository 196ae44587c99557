"""``cryptoflow run`` that SIGKILLs its own process at one point of one micro-batch.

    python -m tests.crash_run after-postgres|after-delta BATCH_ID

``after-postgres``: the batch's PostgreSQL transaction committed, no Delta silver commit yet
(the bronze append, running beside it, may or may not have committed). ``after-delta``:
every write of the batch done, Spark's commit log not written. No shutdown hook runs, as
when a machine dies; the Spark JVM follows its parent.
"""

from __future__ import annotations

import os
import signal
import sys

from cryptoflow.cli import main
from pipelines import batch

_BATCH: list[int] = []  # the batch being run


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, batch_id: int) -> None:
    """Patch the batch function so the process dies at ``point`` of batch ``batch_id``."""
    if point == "after-postgres":
        serve = batch.serve_batch

        def serve_then_die(*args, **kwargs):
            served = serve(*args, **kwargs)
            if args[2] == batch_id:
                _kill()
            return served

        batch.serve_batch = serve_then_die
        merge = batch.Tally.of  # executors placement: the tasks' transactions are done

        def merge_then_die(summaries):
            tally = merge(summaries)
            if batch_id in _BATCH[-1:]:
                _kill()
            return tally

        batch.Tally.of = staticmethod(merge_then_die)  # type: ignore[method-assign]
        call = batch.PipelineBatch.__call__

        def remember_batch(self, evaluated, this_batch):
            _BATCH.append(this_batch)
            call(self, evaluated, this_batch)

        batch.PipelineBatch.__call__ = remember_batch
    elif point == "after-delta":
        call = batch.PipelineBatch.__call__

        def call_then_die(self, evaluated, this_batch):
            call(self, evaluated, this_batch)
            if this_batch == batch_id:
                _kill()

        batch.PipelineBatch.__call__ = call_then_die
    else:
        raise SystemExit(f"unknown point {point!r}: after-postgres or after-delta")


if __name__ == "__main__":
    arm(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(["run"]))
