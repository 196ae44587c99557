"""Gold's exact arithmetic and the metrics oracle, without Spark."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

from pipelines.gold.exact import round_half_even, sqrt_half_even
from pipelines.gold.scope import MAX_RANGES, Scope
from pipelines.gold.transform import finish, merge_ranges, window_dates
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


def test_ranges_and_dates():
    assert merge_ranges([(10, 20), (0, 5), (5, 8), (19, 30)]) == [(0, 8), (10, 30)]
    day = 86_400_000_000
    dates = window_dates([(day - 5_000_000, day + 55_000_000)])
    assert [d.isoformat() for d in dates] == ["1970-01-01", "1970-01-02"]
    assert [d.isoformat() for d in window_dates([(day, 2 * day)])] == ["1970-01-02"]


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


def test_compare_reports_differences():
    t0 = 1_700_000_000_000
    rows = expected_metrics([_trade(1, "1.00000000", "1.00000000", t0, True)], 5)
    changed = [dict(rows[0], vwap=Decimal("1.000000000001")), rows[1]]
    problems = compare_metrics(rows, changed)
    assert len(problems) == 1 and "vwap" in problems[0]
    missing = tuple(rows[1][k] for k in ("symbol", "window_start", "window_end"))
    assert compare_metrics(rows, rows[:1]) == [f"missing window {missing}"]


def test_scope_covers_touched_windows_and_nothing_else():
    minute, sec = 60_000_000, 1_000_000
    touched = {("AAA", 5, 10 * sec), ("AAA", 60, 0), ("BBB", 5, 5 * minute)}
    scope = Scope.of(touched)
    assert scope.symbols == ("AAA", "BBB")
    assert scope.ranges == ((0, minute), (5 * minute, 5 * minute + 5 * sec))
    assert scope.contains("AAA", 55 * sec, minute)
    assert scope.contains("BBB", 0, 5 * sec)  # windows of every scoped symbol are rewritten
    assert not scope.contains("AAA", 58 * sec, 65 * sec)  # straddles the range's end
    assert not scope.contains("CCC", 0, 5 * sec)
    assert not scope.contains("AAA", 5 * minute + 5 * sec, 5 * minute + 10 * sec)
    predicate = scope.gold_predicate((5, 60))
    assert predicate.startswith(
        "window_date IN (DATE'1970-01-01') AND symbol IN ('AAA', 'BBB') "
        "AND window_seconds IN (5, 60) AND "
    )
    assert "window_end <= timestamp_micros(60000000)" in predicate
    many = {("AAA", 5, i * minute) for i in range(MAX_RANGES + 1)}
    assert Scope.of(many).ranges == ((0, MAX_RANGES * minute + 5 * sec),)
