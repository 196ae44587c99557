"""Independent recomputation of the Postgres ``metrics`` rows from raw trade payloads.

Pure Python with ``decimal`` (no Spark, nothing imported from ``pipelines``): end-to-end tests
compare Postgres ``metrics`` with ``expected_metrics(...)`` column by column through
``compare_metrics``. Definitions are DESIGN.md's; rounding is docs/gold.md's: every divided or
rooted metric is the exact value rounded half-even to 12 places. Here that is done by
computing with 100 significant digits and quantizing once, a different route from the job's
exact fractions and integer square root, that gives the same digits.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

SCALE = Decimal("1E-12")
LONG_WINDOW_SECONDS = 60
LATENCIES = ("exchange_latency_ms", "source_latency_ms", "end_to_end_latency_ms")
DECIMAL_COLUMNS = (
    "total_volume",
    "avg_price",
    "min_price",
    "max_price",
    "price_stddev",
    "vwap",
    "buy_volume",
    "sell_volume",
    "buy_sell_ratio",
    "trade_intensity",
    "liquidity_proxy",
    "avg_exchange_latency_ms",
    "avg_source_latency_ms",
    "avg_end_to_end_latency_ms",
)
KEY = ("symbol", "window_start", "window_end")

#: Per trade: (symbol, trade_id) -> {"exchange_latency_ms": ..., "source_latency_ms": ...,
#: "end_to_end_latency_ms": ...} (values may be None), e.g. read from Postgres raw_trades.
Latencies = Mapping[tuple[str, int], Mapping[str, int | None]]


def _context() -> decimal.Context:
    return decimal.Context(prec=100, rounding=decimal.ROUND_HALF_EVEN)


def _sum(values: Iterable[Decimal]) -> Decimal:
    ctx, total = _context(), Decimal(0)
    for v in values:
        total = ctx.add(total, v)
    return total


def _q(value: Decimal) -> Decimal:
    return value.quantize(SCALE, rounding=decimal.ROUND_HALF_EVEN, context=_context())


def unique_trades(payloads: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Trade payloads (``{"s","t","p","q","T","m"}``, or combined-stream wrappers around them)
    with duplicates of (symbol, trade id) removed, the first one kept, as silver does."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for p in payloads:
        trade = p.get("data", p)
        key = (trade["s"], int(trade["t"]))
        seen.setdefault(key, dict(trade))
    return list(seen.values())


def _window(trade_ms: int, seconds: int) -> tuple[datetime, datetime]:
    start_ms = trade_ms - trade_ms % (seconds * 1000)
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=start_ms)
    return start, start + timedelta(seconds=seconds)


def _metrics(
    symbol: str,
    start: datetime,
    end: datetime,
    trades: Sequence[Mapping[str, Any]],
    latencies: Latencies | None,
) -> dict[str, Any]:
    ctx = _context()
    seconds = Decimal(int((end - start).total_seconds()))
    prices = [Decimal(t["p"]) for t in trades]
    qtys = [Decimal(t["q"]) for t in trades]
    n = len(trades)
    total = _sum(qtys)
    buy = _sum(q for t, q in zip(trades, qtys, strict=True) if not t["m"])
    sell = _sum(q for t, q in zip(trades, qtys, strict=True) if t["m"])
    mean = ctx.divide(_sum(prices), n)
    stddev = None
    if n > 1:  # two-pass sample variance
        ss = _sum(ctx.power(ctx.subtract(p, mean), 2) for p in prices)
        stddev = _q(ctx.sqrt(ctx.divide(ss, n - 1)))
    notional = _sum(ctx.multiply(p, q) for p, q in zip(prices, qtys, strict=True))
    row: dict[str, Any] = {
        "symbol": symbol,
        "window_start": start,
        "window_end": end,
        "trade_count": n,
        "total_volume": total,
        "avg_price": _q(mean),
        "min_price": min(prices),
        "max_price": max(prices),
        "price_stddev": stddev,
        "vwap": _q(ctx.divide(notional, total)) if total else None,
        "buy_volume": buy,
        "sell_volume": sell,
        "buy_sell_ratio": _q(ctx.divide(buy, sell)) if sell else None,
        "trade_intensity": _q(ctx.divide(Decimal(n), seconds)),
        "liquidity_proxy": _q(ctx.divide(total, seconds)),
    }
    if latencies is not None:
        for name in LATENCIES:
            values = [latencies[(symbol, int(t["t"]))].get(name) for t in trades]
            values = [Decimal(v) for v in values if v is not None]
            row[f"avg_{name}"] = _q(ctx.divide(_sum(values), len(values))) if values else None
    return row


def expected_metrics(
    payloads: Iterable[Mapping[str, Any]],
    window_seconds: int = 5,
    latencies: Latencies | None = None,
) -> list[dict[str, Any]]:
    """The metrics rows (``window_seconds`` and 1-minute windows) of ``payloads``, ordered by
    symbol, window_start, window_end. Without ``latencies`` the three avg_*_latency_ms
    columns are left out (and ``compare_metrics`` does not compare them)."""
    groups: dict[tuple[str, datetime, datetime], list[dict[str, Any]]] = {}
    for trade in unique_trades(payloads):
        for seconds in sorted({window_seconds, LONG_WINDOW_SECONDS}):
            start, end = _window(int(trade["T"]), seconds)
            groups.setdefault((trade["s"], start, end), []).append(trade)
    return [_metrics(*key, trades, latencies) for key, trades in sorted(groups.items())]


def _utc(value: Any) -> Any:
    """Aware datetimes in UTC (naive ones are local time, as PySpark's ``collect`` returns)."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(_utc(row[k]) for k in KEY)


def compare_metrics(
    expected: Iterable[Mapping[str, Any]], actual: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Differences between expected and actual metrics rows, keyed by (symbol, window_start,
    window_end), as readable lines (empty when equal). Decimals compare by value (trailing
    zeros do not matter, digits do); datetimes as instants; columns absent from an expected
    row are not compared."""
    want = {_key(r): r for r in expected}
    have = {_key(r): r for r in actual}
    problems = [f"missing window {k}" for k in sorted(want.keys() - have.keys())]
    problems += [f"unexpected window {k}" for k in sorted(have.keys() - want.keys())]
    for key in sorted(want.keys() & have.keys()):
        for column, value in want[key].items():
            got, value = _utc(have[key].get(column)), _utc(value)
            if column in DECIMAL_COLUMNS and got is not None and not isinstance(got, Decimal):
                problems.append(f"{key} {column}: {got!r} is not a Decimal")
            elif got != value:
                problems.append(f"{key} {column}: expected {value!r}, got {got!r}")
    return problems


def latencies_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], dict]:
    """``Latencies`` from raw_trades-like rows (symbol, trade_id and the three latency columns)."""
    return {(r["symbol"], int(r["trade_id"])): {n: r[n] for n in LATENCIES} for r in rows}
