"""Delta log checkpoints of the streaming tables, written off the micro-batches' path.

Delta writes a log checkpoint inside the commit that reaches a multiple of the table's
``delta.checkpointInterval``: a Spark job that took 2.5-3.5 s of that one micro-batch on two
cores, so every hundredth bronze or silver batch held its trades for seconds and set the p99
latency (``bench/bench_floor.py``: p99 3.1-3.6 s with it, 1.5 s without). The streaming
tables are therefore created with an interval no commit reaches, and ``LogCheckpointer``, a
thread of the Spark application, checkpoints each of them every ``delta_checkpoint_every``
commits while the micro-batches carry on. The checkpoint and its log clean-up are Delta's
own (``DeltaLog.checkpoint()``), as newer Delta releases do with their asynchronous
checkpoints.
"""

from __future__ import annotations

import logging
import threading
import time

from pyspark.sql import SparkSession

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import first_line
from pipelines.jvm import delta_log

log = logging.getLogger(__name__)

#: The table property a streaming table is created with (``DeltaTableBuilder.property``):
#: an interval no commit reaches, so no commit checkpoints by itself.
NO_INLINE_CHECKPOINTS = ("delta.checkpointInterval", "1000000000")

_LOCK = threading.Lock()
_RUNNING: dict[int, LogCheckpointer] = {}


def checkpoint_in_background(spark: SparkSession, settings: Settings, *paths: str) -> None:
    """Checkpoint the Delta tables at ``paths`` from this application's checkpointer thread
    (started on the first call per session), and stop their commits checkpointing inline.

    Call it before the job's query starts: a table created by an earlier version gets its
    ``delta.checkpointInterval`` raised by one metadata commit, which must not race the
    job's own appends."""
    for path in paths:
        _stop_inline_checkpoints(spark, path)
    with _LOCK:
        checkpointer = _RUNNING.get(id(spark))
        if checkpointer is None or not checkpointer.is_alive():
            checkpointer = LogCheckpointer(spark, settings.delta_checkpoint_every)
            _RUNNING[id(spark)] = checkpointer
            checkpointer.start()
        checkpointer.watch(*paths)


def stop_checkpointer(spark: SparkSession) -> None:
    """Stop the session's checkpointer thread, waiting for a checkpoint under way: call it
    before stopping the session, so no checkpoint fails under a stopping JVM."""
    with _LOCK:
        checkpointer = _RUNNING.pop(id(spark), None)
    if checkpointer is not None and checkpointer.is_alive():
        checkpointer.stop()


def _stop_inline_checkpoints(spark: SparkSession, path: str) -> None:
    if ensure_property(spark, path, *NO_INLINE_CHECKPOINTS):
        log.info("delta log checkpoints of %s now come from the checkpointer thread", path)


def ensure_property(spark: SparkSession, path: str, key: str, value: str) -> bool:
    """Set the Delta table property ``key`` of the table at ``path`` to ``value`` unless it
    has it (one metadata commit: call it before the job's appends start); True when set."""
    current = spark.sql(f"SHOW TBLPROPERTIES delta.`{path}` ('{key}')").collect()
    if current and current[0]["value"] == value:
        return False
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('{key}' = '{value}')")
    return True


class LogCheckpointer(threading.Thread):
    """Every ``poll_s``, checkpoints each watched table that has ``every`` commits or more
    since its last checkpoint. Ends with its SparkContext, or on ``stop()``."""

    def __init__(self, spark: SparkSession, every: int, poll_s: float = 2.0) -> None:
        super().__init__(name="delta-log-checkpointer", daemon=True)
        self.spark, self.every, self.poll_s = spark, every, poll_s
        self._paths: dict[str, int | None] = {}  # path -> version of its last checkpoint
        self._paths_lock = threading.Lock()
        self._halt = threading.Event()
        self.rounds = self.checkpoints = 0

    def watch(self, *paths: str) -> None:
        with self._paths_lock:
            for path in paths:
                self._paths.setdefault(path, None)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        while not self._halt.wait(self.poll_s) and self._context_alive():
            with self._paths_lock:
                paths = list(self._paths)
            for path in paths:
                try:
                    self._maybe_checkpoint(path)
                except Exception as e:  # noqa: BLE001 (the next round retries)
                    if not self._context_alive():
                        return
                    log.warning("delta log checkpoint of %s failed: %s", path, first_line(e))
            self.rounds += 1

    def _context_alive(self) -> bool:
        return self.spark.sparkContext._jsc is not None

    def _maybe_checkpoint(self, path: str) -> None:
        table_log = delta_log(self.spark, path)
        last = self._paths[path]
        if last is None:
            info = table_log.readLastCheckpointFile()
            last = info.get().version() if info.isDefined() else 0  # 0: the table's creation
            self._paths[path] = last
        version = table_log.unsafeVolatileSnapshot().version()
        if version - last < self.every:
            return
        started = time.monotonic()
        table_log.checkpoint()  # the snapshot it checkpoints may be newer than ``version``
        info = table_log.readLastCheckpointFile()
        done: int = info.get().version() if info.isDefined() else version
        self._paths[path] = done
        self.checkpoints += 1
        log.info(
            "delta log checkpoint table=%s version=%d commits_since_last=%d duration_ms=%d",
            path,
            done,
            done - last,
            (time.monotonic() - started) * 1000,
        )
