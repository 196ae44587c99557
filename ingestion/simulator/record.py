"""``--record PATH``: every generated trade (streamed or skipped) as a JSON line of its Binance
trade payload, appended and flushed once per batch so tests can read it while it runs."""

from __future__ import annotations

import json
from pathlib import Path

from ingestion.simulator.frames import Trade


class Recorder:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.written = 0

    def write(self, trades: list[Trade]) -> None:
        self._file.write("".join([t.payload + "\n" for t in trades]))
        self._file.flush()
        self.written += len(trades)

    def close(self) -> None:
        self._file.close()


def read_record(path: Path) -> list[dict]:
    """The trades of a record file (for tests and tools).

    A last line without its newline is being written right now and is left out; any other
    line that is not JSON is an error.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    return [json.loads(line) for line in lines[:-1] if line]
