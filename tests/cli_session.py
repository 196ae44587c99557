"""Several ``cryptoflow`` commands in one process, so they share one Spark JVM.

    python -m tests.cli_session 'checkpoints --format json' 'history silver --format json'

Each command's output follows a line ``=== <exit code> <command>``; the settings come from
the ``CRYPTOFLOW_*`` environment, as for ``cryptoflow`` itself.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import sys

from cryptoflow.cli import main as cryptoflow

MARK = "=== "


def run(commands: list[str]) -> int:
    worst = 0
    for command in commands:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cryptoflow(shlex.split(command))
        print(f"{MARK}{code} {command}\n{out.getvalue()}", end="", flush=True)
        worst = max(worst, code)
    return worst


def parse(output: str) -> dict[str, tuple[int, str]]:
    """command -> (exit code, its output), from this script's output."""
    found: dict[str, tuple[int, str]] = {}
    for block in output.split(MARK)[1:]:
        head, _, body = block.partition("\n")
        code, _, command = head.partition(" ")
        found[command] = (int(code), body)
    return found


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
