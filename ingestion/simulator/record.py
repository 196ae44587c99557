"""``--record PATH``: what the simulator generated, per stream kind, as JSON lines, appended and
flushed once per batch so tests can read it while it runs.

- ``PATH``: every generated trade (streamed or skipped), its Binance ``@trade`` payload;
- ``<stem>.aggTrade<suffix>``: every aggregate trade, its ``@aggTrade`` payload;
- ``<stem>.kline_1m<suffix>``: every closed kline with its TRUE values (``x`` true), its
  ``@kline_1m`` payload with the ``E`` it was sent with;
- ``<stem>.kline_faults<suffix>``: one line per closed kline altered by ``--kline-fault-every``:
  ``{"s": symbol, "t": open time ms, "field": "h", "true": "90000.01000000",
  "sent": "90000.02000000"}`` (values as in the payload: strings for decimals, ints for n f L);
- ``<stem>.bookTicker<suffix>``: every book ticker update, its ``@bookTicker`` payload.

Times in the record are milliseconds (the default unit). ``read_record(path, kind)`` reads one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from ingestion.simulator.frames import Trade

#: What ``read_record`` can read: the stream kinds and the kline faults.
RECORD_KINDS = ("trade", "aggTrade", "kline_1m", "bookTicker", "kline_faults")


def record_path(path: Path, kind: str = "trade") -> Path:
    """The file of ``kind`` beside the trade record ``path``."""
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(RECORD_KINDS)}")
    path = Path(path)
    return path if kind == "trade" else path.with_name(f"{path.stem}.{kind}{path.suffix}")


class Recorder:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._files: dict[str, IO[str]] = {
            kind: open(record_path(path, kind), "a", encoding="utf-8")  # noqa: SIM115 (close())
            for kind in RECORD_KINDS
        }
        self._file = self._files["trade"]
        self.written = 0

    def write(self, trades: list[Trade]) -> None:
        self._file.write("".join([t.payload + "\n" for t in trades]))
        self._file.flush()
        self.written += len(trades)

    def write_lines(self, kind: str, lines: list[str]) -> None:
        """Append JSON ``lines`` (without newlines) to the file of ``kind``."""
        if lines:
            f = self._files[kind]
            f.write("".join([line + "\n" for line in lines]))
            f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def read_record(path: Path, kind: str = "trade") -> list[dict]:
    """The records of ``kind`` (``RECORD_KINDS``) of a record (for tests and tools); [] when
    that file does not exist.

    A last line without its newline is being written right now and is left out; any other
    line that is not JSON is an error.
    """
    file = record_path(path, kind)
    if not file.exists():
        return []
    lines = file.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines[:-1] if line]
