"""Replay Binance public-data files (data.binance.vision, spot) into the raw Kafka topics.

The kind of a file comes from its name, ``SYMBOL-<kind>-YYYY-MM-DD`` (daily) or
``SYMBOL-<kind>-YYYY-MM`` (monthly), ``.zip`` or ``.csv``:

- ``trades``: ``id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch`` -> ``@trade`` frames;
- ``aggTrades``: ``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,
  is_buyer_maker,is_best_match`` -> ``@aggTrade`` frames;
- ``1m``: ``open_time,open,high,low,close,volume,close_time,quote_volume,count,
  taker_buy_volume,taker_buy_quote_volume,ignore`` -> closed ``@kline_1m`` frames (no
  first/last trade id in the file: ``f``/``L`` are -1, see ``kline_frame``).

A header line is optional. Times are written as the file gives them: microseconds in files
from 2025-01-01 on, milliseconds before (``MICROS_FROM`` tells them apart); only pacing
converts to ms. Each row becomes the frame the live stream sends (``source=csv``), produced
to its kind's topic; a malformed line is produced as-is to that topic, flagged
``cryptoflow.invalid`` with the reason, so nothing is silently lost. Files of kinds not in
``CRYPTOFLOW_STREAMS`` are skipped with a log line; a name of no known kind is an error
raised before anything is produced.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ConfigError
from cryptoflow.core.services import kafka
from cryptoflow.core.streams import AGG_TRADE, KLINE_1M, MICROS_FROM, TRADE, StreamKind
from ingestion.exchange_frames import agg_trade_frame, kline_frame
from ingestion.frames import INVALID_HEADER, trade_frame
from ingestion.producer import FrameProducer
from ingestion.status import IngestStats, StatusLine

log = logging.getLogger(__name__)

FILE_NAME = re.compile(
    r"^([A-Z0-9]{1,20})-([A-Za-z0-9]+)-(\d{4}-\d{2}(?:-\d{2})?)\.(zip|csv)$"
)  # SYMBOL-kind-date.ext
_DECIMAL = re.compile(r"^\d+(\.\d+)?$")
_HEADER_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]*$")
_BOOLS = {"true": True, "false": False}


def to_millis(value: int) -> int:
    """A file's time in ms (µs from 2025 on, ms before): for pacing only, frames keep µs."""
    return value // 1000 if value >= MICROS_FROM else value


class CsvRecord(Protocol):
    """One parsed row of a public-data file."""

    @property
    def record_id(self) -> int: ...  # grows per symbol: trade id, aggregate id, open time

    @property
    def time_ms(self) -> int: ...  # when the exchange sent it, in ms (pacing)

    def frame(self, symbol: str) -> bytes: ...


@dataclass(frozen=True)
class CsvTrade:
    """A ``trades`` row; ``time`` in the file's unit (µs from 2025, ms before)."""

    trade_id: int
    price: str
    qty: str
    time: int
    is_buyer_maker: bool
    is_best_match: bool

    @property
    def record_id(self) -> int:
        return self.trade_id

    @property
    def time_ms(self) -> int:
        return to_millis(self.time)

    def frame(self, symbol: str) -> bytes:
        return trade_frame(
            symbol,
            self.trade_id,
            self.price,
            self.qty,
            self.time,
            self.is_buyer_maker,
            self.is_best_match,
        )


@dataclass(frozen=True)
class CsvAggTrade:
    """An ``aggTrades`` row; ``time`` in the file's unit."""

    agg_id: int
    price: str
    qty: str
    first_id: int
    last_id: int
    time: int
    is_buyer_maker: bool
    is_best_match: bool

    @property
    def record_id(self) -> int:
        return self.agg_id

    @property
    def time_ms(self) -> int:
        return to_millis(self.time)

    def frame(self, symbol: str) -> bytes:
        return agg_trade_frame(
            symbol,
            self.agg_id,
            self.price,
            self.qty,
            self.first_id,
            self.last_id,
            self.time,
            self.is_buyer_maker,
            self.is_best_match,
        )


@dataclass(frozen=True)
class CsvKline:
    """A ``1m`` klines row: the 12 columns as the file gives them (times parsed)."""

    open_time: int
    close_time: int
    columns: tuple[str, ...]

    @property
    def record_id(self) -> int:
        return self.open_time

    @property
    def time_ms(self) -> int:
        return to_millis(self.close_time)  # a closed kline is sent when it closes

    def frame(self, symbol: str) -> bytes:
        return kline_frame(symbol, self.columns, interval="1m", closed=True)


def _cols(line: str, expected: int) -> list[str] | str:
    cols = [c.strip() for c in line.strip().split(",")]
    if len(cols) != expected:
        return f"malformed CSV line: {len(cols)} columns, expected {expected}"
    return cols


def parse_line(line: str) -> CsvTrade | str:
    """A ``trades`` row, or the reason the line is malformed."""
    cols = _cols(line, 7)
    if isinstance(cols, str):
        return cols
    tid, price, qty, _quote, ts, maker, best = cols
    if not tid.isdigit():
        return "malformed CSV line: id is not an integer"
    if not (_DECIMAL.match(price) and _DECIMAL.match(qty)):
        return "malformed CSV line: price/qty is not a decimal"
    if not ts.isdigit():
        return "malformed CSV line: time is not an integer"
    if maker.lower() not in _BOOLS or best.lower() not in _BOOLS:
        return "malformed CSV line: isBuyerMaker/isBestMatch is not true/false"
    return CsvTrade(int(tid), price, qty, int(ts), _BOOLS[maker.lower()], _BOOLS[best.lower()])


def parse_agg_trade_line(line: str) -> CsvAggTrade | str:
    """An ``aggTrades`` row, or the reason the line is malformed."""
    cols = _cols(line, 8)
    if isinstance(cols, str):
        return cols
    aid, price, qty, first, last, ts, maker, best = cols
    if not (aid.isdigit() and first.isdigit() and last.isdigit()):
        return "malformed CSV line: agg_trade_id/first_trade_id/last_trade_id is not an integer"
    if not (_DECIMAL.match(price) and _DECIMAL.match(qty)):
        return "malformed CSV line: price/quantity is not a decimal"
    if not ts.isdigit():
        return "malformed CSV line: transact_time is not an integer"
    if maker.lower() not in _BOOLS or best.lower() not in _BOOLS:
        return "malformed CSV line: is_buyer_maker/is_best_match is not true/false"
    return CsvAggTrade(
        int(aid),
        price,
        qty,
        int(first),
        int(last),
        int(ts),
        _BOOLS[maker.lower()],
        _BOOLS[best.lower()],
    )


def parse_kline_line(line: str) -> CsvKline | str:
    """A ``1m`` klines row, or the reason the line is malformed."""
    cols = _cols(line, 12)
    if isinstance(cols, str):
        return cols
    t_open, o, h, low, c, v, t_close, q, n, vb, qb, _ignore = cols
    if not (t_open.isdigit() and t_close.isdigit()):
        return "malformed CSV line: open_time/close_time is not an integer"
    if not all(_DECIMAL.match(x) for x in (o, h, low, c, v, q, vb, qb)):
        return "malformed CSV line: a price or volume is not a decimal"
    if not n.isdigit():
        return "malformed CSV line: count is not an integer"
    return CsvKline(int(t_open), int(t_close), tuple(cols))


@dataclass(frozen=True)
class FileKind:
    """A public-data file kind: its name in file names, the stream kind it replays into, its
    column count and its row parser."""

    tag: str
    kind: StreamKind
    columns: int
    parse: Callable[[str], CsvRecord | str]


FILE_KINDS: dict[str, FileKind] = {
    f.tag: f
    for f in (
        FileKind("trades", TRADE, 7, parse_line),
        FileKind("aggTrades", AGG_TRADE, 8, parse_agg_trade_line),
        FileKind("1m", KLINE_1M, 12, parse_kline_line),
    )
}

_NAMES = (
    "SYMBOL-trades-YYYY-MM-DD.zip or .csv, SYMBOL-aggTrades-YYYY-MM-DD.zip or "
    "SYMBOL-1m-YYYY-MM-DD.zip (or monthly YYYY-MM)"
)


@dataclass(frozen=True)
class ReplayFile:
    """A file to replay: its path, symbol and kind (all from its name)."""

    path: Path
    symbol: str
    kind: FileKind


def replay_file(path: Path) -> ReplayFile:
    """The symbol and kind of a public-data file from its name; a ``ConfigError`` otherwise."""
    path = Path(path)
    m = FILE_NAME.match(path.name)
    if not m:
        raise ConfigError(
            f"{path.name}: expected a Binance public-data file named {_NAMES}; "
            "the symbol and the kind come from the name"
        )
    kind = FILE_KINDS.get(m.group(2))
    if kind is None:
        raise ConfigError(
            f"{path.name}: unknown public-data kind {m.group(2)!r}; replayable kinds are "
            f"{', '.join(FILE_KINDS)} ({_NAMES})"
        )
    return ReplayFile(path, m.group(1), kind)


def symbol_of(path: Path) -> str:
    """The symbol of a public-data file, from its name (``ConfigError`` if not one)."""
    return replay_file(path).symbol


def plan(settings: Settings, paths: Sequence[Path]) -> list[ReplayFile]:
    """The files of ``paths`` to replay, in order: every name is checked first (an unknown
    one is a ``ConfigError``), then files of kinds not in ``settings.stream_kinds`` are
    dropped with a log line."""
    files = [replay_file(Path(p)) for p in paths]
    chosen = {k.name for k in settings.stream_kinds}
    kept = []
    for f in files:
        if f.kind.kind.name in chosen:
            kept.append(f)
        else:
            log.info(
                "skipping %s: stream kind %s is not in CRYPTOFLOW_STREAMS (%s)",
                f.path,
                f.kind.kind.name,
                ",".join(sorted(chosen)),
            )
    return kept


def is_header(line: str, columns: int) -> bool:
    """Whether ``line`` is a header: ``columns`` names, none of them a number."""
    cols = [c.strip() for c in line.strip().lstrip("\ufeff").split(",")]
    return len(cols) == columns and all(_HEADER_COLUMN.match(c) for c in cols)


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
    """Waits so records go out at their original pace divided by ``speed`` (None = no wait)."""

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
    """Produce every line of ``paths`` (in order) to its kind's raw topic; returns when done or
    stopped. ``stats.last_trade_id`` follows trades only; ``stats.duplicates`` counts records
    of any kind whose id is not above the last one of their symbol and kind."""
    if not paths:
        raise ConfigError("--source csv needs at least one file: --csv SYMBOL-trades-DATE.zip")
    if speed is not None and speed <= 0:
        raise ConfigError(f"--speed {speed}: must be positive (omit it for as fast as possible)")
    files = plan(settings, paths)  # check every name before producing
    for kind in {f.kind.kind.name: f.kind.kind for f in files}.values():
        if kind is not TRADE:  # the runner creates the trade topic
            kafka.ensure_topic(settings, settings.topic(kind))
    status = StatusLine(stats)
    next_status = time.monotonic() + settings.status_interval_s
    pacer = Pacer(speed, stop)
    last: dict[tuple[str, str], int] = {}  # (kind, symbol) -> last record id
    for f in files:
        topic, key, fk = settings.topic(f.kind.kind), f.symbol.encode(), f.kind
        headers = [("source", b"csv"), ("connection", f.path.name.encode())]
        log.info(
            "replaying %s symbol=%s kind=%s topic=%s speed=%s",
            f.path,
            f.symbol,
            fk.kind.name,
            topic,
            speed or "max",
        )
        for n, line in enumerate(read_lines(f.path)):
            if stop.is_set():
                return
            if n == 0:
                line = line.lstrip("\ufeff")
                if is_header(line, fk.columns):
                    continue
            if not line.strip():
                continue
            stats.frames += 1
            parsed = fk.parse(line)
            if isinstance(parsed, str):
                stats.invalid += 1
                flagged = [*headers, (INVALID_HEADER, parsed.encode())]
                value = line.rstrip("\r\n").encode()
                producer.produce_blocking(topic, key, value, int(time.time() * 1000), flagged)
                continue
            pacer.wait(parsed.time_ms)
            prev = last.get((fk.tag, f.symbol))
            if prev is not None and parsed.record_id <= prev:
                stats.duplicates += 1
            else:
                last[(fk.tag, f.symbol)] = parsed.record_id
                if fk.kind is TRADE:
                    stats.last_trade_id[f.symbol] = parsed.record_id
            frame = parsed.frame(f.symbol)
            producer.produce_blocking(topic, key, frame, int(time.time() * 1000), headers)
            if stats.frames % 1000 == 0:
                producer.poll(0)
            if time.monotonic() >= next_status:
                log.info("status %s", status.line(producer.buffered))
                next_status += settings.status_interval_s
