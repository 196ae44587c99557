"""Gold's exact arithmetic and the metrics oracle, without Spark."""

from __future__ import annotations

import calendar
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

from pipelines.gold.exact import round_half_even, sqrt_half_even
from pipelines.gold.fold import as_window_sums, micros
from pipelines.gold.transform import finish, from_micros
from tests.metrics_oracle import compare_metrics, expected_metrics


@pytest.mark.parametrize(
    ("value", "scale", "expected"),
    [
        (Fraction(1, 3), 12, "0.333333333333"),
        (Fraction(2, 3), 12, "0.666666666667"),
        (Fraction(5, 2), 0, "2"),  # tie -> even
        (Fraction(7, 2), 0, "4"),
        (Fraction(-5, 2), 0, "-2"),
        (Fraction(125, 1000), 2, "0.12"),
        (Fraction(135, 1000), 2, "0.14"),
        (Fraction(10**30), 12, "1000000000000000000000000000000"),
    ],
)
def test_round_half_even(value, scale, expected):
    got = round_half_even(value, scale)
    assert got == Decimal(expected)
    assert got.as_tuple().exponent == -scale


@pytest.mark.parametrize(
    ("value", "scale", "expected"),
    [
        (Fraction(2), 12, "1.414213562373"),
        (Fraction(0), 12, "0"),
        (Fraction(225, 100), 1, "1.5"),
        (Fraction(25, 16), 1, "1.2"),  # sqrt = 1.25 exactly: tie -> even
        (Fraction(5625, 1000000), 2, "0.08"),  # sqrt = 0.075: tie -> even
        (Fraction(5625 * 9, 1000000), 2, "0.22"),  # sqrt = 0.225: tie -> even
        (Fraction(1, 10**16), 8, "0.00000001"),
    ],
)
def test_sqrt_half_even(value, scale, expected):
    assert sqrt_half_even(value, scale) == Decimal(expected)


def test_sqrt_matches_high_precision_decimal():
    rng = random.Random(7)
    for _ in range(500):
        value = Fraction(rng.randint(0, 10**30), rng.randint(1, 10**12))
        with localcontext() as ctx:
            ctx.prec = 120
            wide = (Decimal(value.numerator) / Decimal(value.denominator)).sqrt()
            assert sqrt_half_even(value, 12) == wide.quantize(Decimal("1E-12"))


def test_negative_square_root_is_an_error():
    with pytest.raises(ValueError, match="negative"):
        sqrt_half_even(Fraction(-1), 2)


def _trade(t, p, q, T, m, s="BTCUSDT"):
    return {"e": "trade", "E": T + 3, "s": s, "t": t, "p": p, "q": q, "T": T, "m": m, "M": True}


def test_oracle_hand_computed_window():
    # 12:00:00.000 .. 12:00:04.999 is one 5 s window; 12:00:05.000 starts the next.
    t0 = int(datetime(2025, 3, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
    trades = [
        _trade(1, "100.00000000", "1.00000000", t0, False),
        _trade(2, "102.00000000", "3.00000000", t0 + 4999, True),
        _trade(3, "104.00000000", "0.50000000", t0 + 2000, False),
        _trade(3, "999.00000000", "9.00000000", t0 + 2000, False),  # duplicate id: ignored
        _trade(4, "90.00000000", "2.00000000", t0 + 5000, False),
    ]
    rows = {(r["window_start"], r["window_end"]): r for r in expected_metrics(trades, 5)}
    start = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    first = rows[(start, start.replace(second=5))]
    assert first["trade_count"] == 3
    assert first["total_volume"] == Decimal("4.5")
    assert first["avg_price"] == Decimal("102")
    assert first["min_price"] == Decimal("100") and first["max_price"] == Decimal("104")
    assert first["price_stddev"] == Decimal("2")  # deviations -2, 0, 2: sqrt(8 / 2)
    # (100 + 306 + 52) / 4.5 = 101.777...
    assert first["vwap"] == Decimal("101.777777777778")
    assert first["buy_volume"] == Decimal("1.5") and first["sell_volume"] == Decimal("3")
    assert first["buy_sell_ratio"] == Decimal("0.5")
    assert first["trade_intensity"] == Decimal("0.6")
    assert first["liquidity_proxy"] == Decimal("0.9")
    second = rows[(start.replace(second=5), start.replace(second=10))]
    assert second["trade_count"] == 1
    assert second["price_stddev"] is None
    assert second["buy_sell_ratio"] is None  # sell_volume 0
    minute = rows[(start, start.replace(minute=1))]
    assert minute["trade_count"] == 4
    assert minute["trade_intensity"] == Decimal("0.066666666667")  # 4 / 60


def test_finish_equals_oracle_from_exact_sums():
    """``finish`` on sums made by hand gives the oracle's row, every column."""
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
    trades = [
        _trade(i, f"{rng_p}.{i:08d}", f"0.{i * 7:08d}", t0 + i * 97, i % 3 == 0)
        for i, rng_p in enumerate([30000, 30001, 29999, 30002, 30000, 29998], start=1)
    ]
    lat = {
        ("BTCUSDT", t["t"]): {
            "exchange_latency_ms": t["t"],
            "source_latency_ms": 2 * t["t"],
            "end_to_end_latency_ms": None,
        }
        for t in trades
    }
    expected = [
        r for r in expected_metrics(trades, 5, latencies=lat) if r["window_end"].second == 0
    ]
    p = [Decimal(t["p"]) for t in trades]
    q = [Decimal(t["q"]) for t in trades]
    sums = {
        "symbol": "BTCUSDT",
        "window_seconds": 60,
        "window_start_us": t0 * 1000,
        "trade_count": len(trades),
        "sum_price": sum(p),
        "sum_price_sq": sum(x * x for x in p),
        "sum_notional": sum(x * y for x, y in zip(p, q, strict=True)),
        "total_volume": sum(q),
        "min_price": min(p),
        "max_price": max(p),
        "buy_volume": sum(y for t, y in zip(trades, q, strict=True) if not t["m"]),
        "sell_volume": sum(y for t, y in zip(trades, q, strict=True) if t["m"]),
        "last_trade_us": max(t["T"] for t in trades) * 1000,
        "sum_exchange_latency_ms": sum(t["t"] for t in trades),
        "count_exchange_latency_ms": len(trades),
        "sum_source_latency_ms": sum(2 * t["t"] for t in trades),
        "count_source_latency_ms": len(trades),
        "sum_end_to_end_latency_ms": None,
        "count_end_to_end_latency_ms": 0,
    }
    assert compare_metrics(expected, [finish(sums)]) == []


def _us(*fields: int) -> int:
    """Microseconds since the epoch of a UTC (year, month, day, hour, minute, second)."""
    return calendar.timegm((*fields, 0, 0, 0)) * 1_000_000


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (datetime(2025, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC), _us(2025, 3, 1, 12, 0, 0) + 123_456),
        (  # the same instant at another offset, as psycopg2 returns a session-zone timestamptz
            datetime(2025, 3, 1, 17, 30, 0, 123_456, tzinfo=timezone(timedelta(hours=5.5))),
            _us(2025, 3, 1, 12, 0, 0) + 123_456,
        ),
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), -1),
        (  # beyond a double's 15-16 digits: float timestamps would lose the last microsecond
            datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            _us(9999, 12, 31, 23, 59, 59) + 999_999,
        ),
    ],
)
def test_micros_is_exact(ts, expected):
    assert micros(ts) == expected
    assert micros(from_micros(expected)) == expected
    assert from_micros(micros(ts)) == ts


def test_metric_sums_row_finishes_like_its_window_sums_row():
    """A ``metric_sums`` row as psycopg2 returns it (numeric as Decimal, timestamptz as an
    aware datetime at the session's offset, the fold's latency sum coalesced to 0 when no
    trade had one, plus lake/change_seq/new_trades) gives, through ``as_window_sums`` and
    ``finish``, exactly the gold row ``finish`` makes of Spark's ``window_sums`` row for the
    same window."""
    p = [Decimal("30000.50000000"), Decimal("30001.25000000"), Decimal("30001.25000001")]
    q = [Decimal("0.00100000"), Decimal("2.50000000"), Decimal("0.33333333")]
    maker = [False, True, False]
    start = datetime(2025, 3, 1, 11, 59, tzinfo=UTC)
    last = start + timedelta(seconds=41, microseconds=123_456)  # sub-millisecond part kept
    start_us = _us(2025, 3, 1, 11, 59, 0)
    exchange, source = [3, 5, 8], [10, 20, 31]
    exact = {
        "symbol": "BTCUSDT",
        "window_seconds": 60,
        "trade_count": 3,
        "sum_price": sum(p),
        "sum_price_sq": sum(x * x for x in p),
        "sum_notional": sum(x * y for x, y in zip(p, q, strict=True)),
        "total_volume": sum(q),
        "min_price": min(p),
        "max_price": max(p),
        "buy_volume": sum(y for m, y in zip(maker, q, strict=True) if not m),
        "sell_volume": sum(y for m, y in zip(maker, q, strict=True) if m),
        "count_exchange_latency_ms": 3,
        "count_source_latency_ms": 3,
        "count_end_to_end_latency_ms": 0,
    }
    spark_row = {  # window_sums: epoch microseconds, long sums, NULL sum over no latency
        **exact,
        "window_start_us": start_us,
        "last_trade_us": start_us + 41_123_456,
        "sum_exchange_latency_ms": sum(exchange),
        "sum_source_latency_ms": sum(source),
        "sum_end_to_end_latency_ms": None,
    }
    plus2 = timezone(timedelta(hours=2))
    pg_row = {  # metric_sums: timestamptz, numeric sums, coalesce(sum, 0)
        **exact,
        "window_start": start.astimezone(plus2),
        "last_trade_time": last.astimezone(plus2),
        "sum_exchange_latency_ms": Decimal(sum(exchange)),
        "sum_source_latency_ms": Decimal(sum(source)),
        "sum_end_to_end_latency_ms": Decimal(0),
        "lake": "/lake/gold",
        "change_seq": 42,
        "new_trades": 3,
    }
    sums = as_window_sums(pg_row)
    assert (sums["window_start_us"], sums["last_trade_us"]) == (start_us, start_us + 41_123_456)
    assert "window_start_us" not in pg_row  # a copy: the fetched row is left as it was
    got, want = finish(sums), finish(spark_row)
    assert got == want
    assert got["window_start"] == start and got["window_end"] == start + timedelta(minutes=1)
    assert got["last_trade_time"] == last and got["window_date"] == start.date()
    assert got["avg_source_latency_ms"] == Decimal("20.333333333333")
    assert got["avg_end_to_end_latency_ms"] is None  # no trade had one: not 0 / 0 = 0


def test_compare_reports_differences():
    t0 = 1_700_000_000_000
    rows = expected_metrics([_trade(1, "1.00000000", "1.00000000", t0, True)], 5)
    changed = [dict(rows[0], vwap=Decimal("1.000000000001")), rows[1]]
    problems = compare_metrics(rows, changed)
    assert len(problems) == 1 and "vwap" in problems[0]
    missing = tuple(rows[1][k] for k in ("symbol", "window_start", "window_end"))
    assert compare_metrics(rows, rows[:1]) == [f"missing window {missing}"]
