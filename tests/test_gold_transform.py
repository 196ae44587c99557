"""Gold transforms on small hand-made silver frames, and against the independent oracle."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from pipelines.gold.transform import GOLD_COLUMNS, compute_metrics, window_sums
from tests.gold_data import latencies, random_trades, silver_frame, trade
from tests.metrics_oracle import compare_metrics, expected_metrics

pytestmark = pytest.mark.integration  # needs the session's Spark
T0 = int(datetime(2025, 3, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)


def _by_window(df):
    return {
        (r["symbol"], r["window_start"].astimezone(UTC), r["window_seconds"]): r.asDict()
        for r in df.collect()
    }


def _at(second: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, 1, 12, minute, second, tzinfo=UTC)


def test_hand_computed_metrics_and_boundaries(spark):
    trades = [
        trade("BTCUSDT", 1, "100.00000000", "1.00000000", T0, False),
        trade("BTCUSDT", 2, "102.00000000", "3.00000000", T0 + 4_999, True),
        trade("BTCUSDT", 3, "104.00000000", "0.50000000", T0 + 2_000, False),
        trade("BTCUSDT", 4, "90.00000000", "2.00000000", T0 + 5_000, False),  # next window
        trade("BTCUSDT", 5, "91.00000000", "2.00000000", T0 + 60_000, True),  # next minute
        trade("ETHUSDT", 1, "3000.12345678", "0.00000001", T0 + 1, True),
    ]
    lat = {
        (t["s"], t["t"]): {"exchange_latency_ms": 10, "source_latency_ms": 12 + t["t"],
                           "end_to_end_latency_ms": 100} for t in trades
    }  # fmt: skip
    got = _by_window(compute_metrics(silver_frame(spark, trades, lat), 5))
    assert list(got[("BTCUSDT", _at(0), 5)]) == list(GOLD_COLUMNS)
    first = got[("BTCUSDT", _at(0), 5)]
    assert first["window_end"].astimezone(UTC) == _at(5)
    assert first["trade_count"] == 3
    assert first["total_volume"] == Decimal("4.5")
    assert first["avg_price"] == Decimal("102")
    assert (first["min_price"], first["max_price"]) == (Decimal(100), Decimal(104))
    assert first["price_stddev"] == Decimal("2")
    assert first["vwap"] == Decimal("101.777777777778")
    assert (first["buy_volume"], first["sell_volume"]) == (Decimal("1.5"), Decimal(3))
    assert first["buy_sell_ratio"] == Decimal("0.5")
    assert first["trade_intensity"] == Decimal("0.6")
    assert first["liquidity_proxy"] == Decimal("0.9")
    assert first["avg_exchange_latency_ms"] == Decimal(10)
    assert first["avg_source_latency_ms"] == Decimal(14)  # (13 + 14 + 15) / 3
    assert first["last_trade_time"].astimezone(UTC) == datetime.fromtimestamp(
        (T0 + 4_999) / 1000, UTC
    )
    second = got[("BTCUSDT", _at(5), 5)]  # 12:00:05.000 opens the next window
    assert second["trade_count"] == 1
    assert second["price_stddev"] is None  # one trade
    assert second["buy_sell_ratio"] is None  # sell_volume 0
    minute = got[("BTCUSDT", _at(0), 60)]
    assert minute["window_end"].astimezone(UTC) == _at(0, minute=1)
    assert minute["trade_count"] == 4
    assert minute["trade_intensity"] == Decimal("0.066666666667")
    assert minute["liquidity_proxy"] == Decimal("0.108333333333")  # 6.5 / 60
    assert got[("BTCUSDT", _at(0, minute=1), 60)]["trade_count"] == 1
    eth = got[("ETHUSDT", _at(0), 5)]
    assert eth["buy_volume"] == 0 and eth["sell_volume"] == Decimal("0.00000001")
    assert eth["buy_sell_ratio"] == 0
    assert eth["vwap"] == Decimal("3000.12345678")
    assert len(got) == 7  # BTC: 3 windows of 5 s and 2 of a minute; ETH: one of each


def test_sums_are_exact_decimal_types(spark):
    trades = [trade("BTCUSDT", 1, "99999.99999999", "9999.99999999", T0, True)]
    lat = {("BTCUSDT", 1): dict.fromkeys(("exchange_latency_ms", "source_latency_ms",
                                          "end_to_end_latency_ms"), 1)}  # fmt: skip
    sums = window_sums(silver_frame(spark, trades, lat), [5])
    types = dict(sums.dtypes)
    assert types["sum_price"] == "decimal(28,8)"
    assert types["sum_price_sq"] == "decimal(38,16)"
    assert types["sum_notional"] == "decimal(38,16)"
    row = sums.first()
    assert row["sum_notional"] == Decimal("99999.99999999") * Decimal("9999.99999999")


def test_transform_equals_oracle_on_random_trades(spark):
    rng = random.Random(20251126)
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    trades = random_trades(rng, symbols, 400, T0 - 30_000, 200_000)  # ~4 minutes
    lat = latencies(trades, rng)
    for window_seconds in (5, 7):
        expected = expected_metrics(trades, window_seconds, latencies=lat)
        got = compute_metrics(silver_frame(spark, trades, lat), window_seconds)
        assert len(expected) > 60
        assert compare_metrics(expected, [r.asDict() for r in got.collect()]) == []
