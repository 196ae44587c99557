"""Replay Binance public-data trade files (``SYMBOL-trades-YYYY-MM-DD.zip`` / ``.csv``).

Columns ``id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch``, with or without a header
line; ``time`` is microseconds in files from 2025-01-01 on and milliseconds before, told apart
by magnitude. Each row becomes the same combined-stream trade frame the live feed sends
(``source=csv``); a malformed line is produced as-is, flagged ``cryptoflow.invalid``.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ConfigError
from ingestion.frames import INVALID_HEADER, trade_frame
from ingestion.producer import FrameProducer
from ingestion.status import IngestStats, StatusLine

log = logging.getLogger(__name__)

FILE_NAME = re.compile(r"^([A-Z0-9]+)-trades-\d{4}-\d{2}-\d{2}\.(zip|csv)$")
MICROS_ABOVE = 10**14  # ms timestamps stay below this until the year 5138
_DECIMAL = re.compile(r"^\d+(\.\d+)?$")
_BOOLS = {"true": True, "false": False}


@dataclass(frozen=True)
class CsvTrade:
    trade_id: int
    price: str
    qty: str
    time_ms: int
    is_buyer_maker: bool
    is_best_match: bool


def symbol_of(path: Path) -> str:
    m = FILE_NAME.match(path.name)
    if not m:
        raise ConfigError(
            f"{path.name}: expected a Binance public-data trade file named "
            "SYMBOL-trades-YYYY-MM-DD.zip or .csv (the symbol comes from the name)"
        )
    return m.group(1)


def to_millis(value: int) -> int:
    """Trade time in ms from a file's ``time`` column (µs from 2025 on, ms before)."""
    return value // 1000 if value >= MICROS_ABOVE else value


def parse_line(line: str) -> CsvTrade | str:
    """A trade, or the reason the line is malformed."""
    cols = line.strip().split(",")
    if len(cols) != 7:
        return f"malformed CSV line: {len(cols)} columns, expected 7"
    tid, price, qty, _quote, ts, maker, best = (c.strip() for c in cols)
    if not tid.isdigit():
        return "malformed CSV line: id is not an integer"
    if not (_DECIMAL.match(price) and _DECIMAL.match(qty)):
        return "malformed CSV line: price/qty is not a decimal"
    if not ts.isdigit():
        return "malformed CSV line: time is not an integer"
    if maker.lower() not in _BOOLS or best.lower() not in _BOOLS:
        return "malformed CSV line: isBuyerMaker/isBestMatch is not true/false"
    return CsvTrade(
        int(tid), price, qty, to_millis(int(ts)), _BOOLS[maker.lower()], _BOOLS[best.lower()]
    )


def _is_header(line: str) -> bool:
    return line.lower().startswith("id,") or line.lower().startswith("trade_id,")


def read_lines(path: Path) -> Iterator[str]:
    """Lines of a ``.csv`` file, or of every ``.csv`` member of a ``.zip``."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith(".csv"):
                    with zf.open(name) as f:
                        yield from io.TextIOWrapper(f, encoding="utf-8", errors="replace")
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from f


class Pacer:
    """Waits so trades go out at their original pace divided by ``speed`` (None = no wait)."""

    def __init__(self, speed: float | None, stop: threading.Event) -> None:
        self.speed = speed
        self.stop = stop
        self.first_trade_ms: int | None = None
        self.started = 0.0

    def wait(self, trade_ms: int) -> None:
        if not self.speed:
            return
        if self.first_trade_ms is None:
            self.first_trade_ms, self.started = trade_ms, time.monotonic()
            return
        due = self.started + (trade_ms - self.first_trade_ms) / 1000 / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)


def replay(
    settings: Settings,
    producer: FrameProducer,
    stats: IngestStats,
    paths: Sequence[Path],
    speed: float | None,
    stop: threading.Event,
) -> None:
    """Produce every line of ``paths`` (in order) to the raw topic; returns when done/stopped."""
    if not paths:
        raise ConfigError("--source csv needs at least one file: --csv SYMBOL-trades-DATE.zip")
    if speed is not None and speed <= 0:
        raise ConfigError(f"--speed {speed}: must be positive (omit it for as fast as possible)")
    symbols = [symbol_of(Path(p)) for p in paths]  # check every name before producing
    topic = settings.kafka_topic
    status = StatusLine(stats)
    next_status = time.monotonic() + settings.status_interval_s
    pacer = Pacer(speed, stop)
    for path, symbol in zip(paths, symbols, strict=True):
        key = symbol.encode()
        headers = [("source", b"csv"), ("connection", Path(path).name.encode())]
        log.info("replaying %s symbol=%s speed=%s", path, symbol, speed or "max")
        for n, line in enumerate(read_lines(Path(path))):
            if stop.is_set():
                return
            if n == 0 and _is_header(line):
                continue
            if not line.strip():
                continue
            stats.frames += 1
            parsed = parse_line(line)
            now_ms = int(time.time() * 1000)
            if isinstance(parsed, str):
                stats.invalid += 1
                flagged = [*headers, (INVALID_HEADER, parsed.encode())]
                value = line.rstrip("\r\n").encode()
                producer.produce_blocking(topic, key, value, now_ms, flagged)
                continue
            pacer.wait(parsed.time_ms)
            prev = stats.last_trade_id.get(symbol)
            if prev is not None and parsed.trade_id <= prev:
                stats.duplicates += 1
            else:
                stats.last_trade_id[symbol] = parsed.trade_id
            frame = trade_frame(
                symbol,
                parsed.trade_id,
                parsed.price,
                parsed.qty,
                parsed.time_ms,
                parsed.is_buyer_maker,
                parsed.is_best_match,
            )
            producer.produce_blocking(topic, key, frame, int(time.time() * 1000), headers)
            if stats.frames % 1000 == 0:
                producer.poll(0)
            if time.monotonic() >= next_status:
                log.info("status %s", status.line(producer.buffered))
                next_status += settings.status_interval_s
