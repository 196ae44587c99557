"""Independent recomputation of candles (Binance klines) from raw trade payloads.

Pure Python with ``decimal`` and nothing imported from ``pipelines``: tests compare the
folded ``candles`` rows with ``expected_candles(...)`` column by column through
``compare_candles``. The definition is Binance's (docs/gold.md "Candles"): trades sorted by
trade id; open / close = price of the first / last; volume Σq, quote volume Σp·q;
taker buy = the trades whose ``m`` is false; windows epoch-aligned by trade time.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

KEY = ("symbol", "interval", "open_time")
COLUMNS = (
    "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close", "volume",
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume", "first_trade_id",
    "last_trade_id",
)  # fmt: skip
#: (name, seconds) of the default CRYPTOFLOW_CANDLE_INTERVALS.
DEFAULT_INTERVALS = (("1s", 1), ("1m", 60), ("5m", 300), ("1h", 3600))
_EXACT = decimal.Context(prec=200)


def _time(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def _unique(payloads: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Payloads (or combined-stream wrappers) without repeated (symbol, id), first kept."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for p in payloads:
        t = p.get("data", p)
        seen.setdefault((t["s"], int(t["t"])), dict(t))
    return list(seen.values())


def _candle(symbol: str, name: str, seconds: int, open_ms: int, trades: list[dict]) -> dict:
    trades = sorted(trades, key=lambda t: int(t["t"]))
    p = [Decimal(t["p"]) for t in trades]
    q = [Decimal(t["q"]) for t in trades]
    taker = [not t["m"] for t in trades]
    notional = [_EXACT.multiply(a, b) for a, b in zip(p, q, strict=True)]
    return {
        "symbol": symbol,
        "interval": name,
        "open_time": _time(open_ms),
        "close_time": _time(open_ms + seconds * 1000 - 1),
        "open": p[0],
        "high": max(p),
        "low": min(p),
        "close": p[-1],
        "volume": sum(q, Decimal(0)),
        "quote_volume": sum(notional, Decimal(0)),
        "trades": len(trades),
        "taker_buy_volume": sum((x for x, b in zip(q, taker, strict=True) if b), Decimal(0)),
        "taker_buy_quote_volume": sum(
            (x for x, b in zip(notional, taker, strict=True) if b), Decimal(0)
        ),
        "first_trade_id": int(trades[0]["t"]),
        "last_trade_id": int(trades[-1]["t"]),
    }


def expected_candles(
    payloads: Iterable[Mapping[str, Any]],
    intervals: Iterable[tuple[str, int]] = DEFAULT_INTERVALS,
) -> list[dict[str, Any]]:
    """Every candle of ``payloads`` (trade times in ms) for each (name, seconds) interval,
    ordered by symbol, interval, open_time."""
    groups: dict[tuple[str, str, int, int], list[dict]] = {}
    for t in _unique(payloads):
        for name, seconds in intervals:
            ms = int(t["T"])
            groups.setdefault((t["s"], name, seconds, ms - ms % (seconds * 1000)), []).append(t)
    return [_candle(*key, trades) for key, trades in sorted(groups.items())]


def _key(row: Mapping[str, Any]) -> tuple:
    return tuple(row[k].astimezone(UTC) if isinstance(row[k], datetime) else row[k] for k in KEY)


def compare_candles(
    expected: Iterable[Mapping[str, Any]], actual: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Differences between expected and actual candles by (symbol, interval, open_time), as
    readable lines (empty when equal); decimals by value, times as instants."""
    want = {_key(r): r for r in expected}
    have = {_key(r): r for r in actual}
    problems = [f"missing candle {k}" for k in sorted(want.keys() - have.keys())]
    problems += [f"unexpected candle {k}" for k in sorted(have.keys() - want.keys())]
    for key in sorted(want.keys() & have.keys()):
        for column in COLUMNS:
            got, value = have[key][column], want[key][column]
            if isinstance(got, datetime):
                got = got.astimezone(UTC)
            if isinstance(value, Decimal) and not isinstance(got, Decimal):
                problems.append(f"{key} {column}: {got!r} is not a Decimal")
            elif got != value:
                problems.append(f"{key} {column}: expected {value!r}, got {got!r}")
    return problems
