"""Candles folded from trades (pipelines/gold/candles.py, fold.py) against the independent
oracle (tests/candle_oracle.py), in every column, through the real PostgreSQL: out-of-order
and late batches, replays, and Binance's open/close by trade id."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from cryptoflow.core.errors import ConfigError
from pipelines.gold.candles import CandleInterval, candle_intervals, parse_intervals
from tests.candle_oracle import compare_candles, expected_candles
from tests.gold_data import random_trades, trade
from tests.gold_pg import at, fold, rows

BASE_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC: a whole hour


def test_intervals_parse_with_binance_names_and_reject_bad_ones(settings):
    assert parse_intervals("1s,1m,5m,1h") == (
        CandleInterval("1s", 1), CandleInterval("1m", 60), CandleInterval("5m", 300),
        CandleInterval("1h", 3600),
    )  # fmt: skip
    assert parse_intervals(" 1h, 60s ,90s") == (
        CandleInterval("1m", 60), CandleInterval("90s", 90), CandleInterval("1h", 3600),
    )  # fmt: skip
    for bad in ("1d", "0m", "m", "5x", "1.5m", "-1s"):
        with pytest.raises(ConfigError, match="CRYPTOFLOW_CANDLE_INTERVALS: bad interval"):
            parse_intervals(f"1s,{bad}")
    with pytest.raises(ConfigError, match="repeats 1m"):
        parse_intervals("1m,60s")
    # reconciling (kline_1m among the streams) adds the 1 m candles it compares
    s = settings.replace(candle_intervals="1s,5m", streams="trade,kline_1m")
    assert [i.name for i in candle_intervals(s)] == ["1s", "1m", "5m"]
    assert [i.name for i in candle_intervals(s.replace(streams="trade"))] == ["1s", "5m"]


def _candles(settings, symbols) -> list[dict]:
    return rows(settings, "SELECT * FROM candles WHERE symbol = ANY(%s)", (list(symbols),))


def test_folded_candles_equal_the_oracle_across_late_batches_and_replays(settings, unique):
    a, b = f"A{unique.upper()}USDT", f"B{unique.upper()}USDT"
    lake = f"/lake/{unique}"
    rng = random.Random(int(unique, 16))
    # ids in generation order, times random over 7 minutes: id order is not time order, and
    # several trades share a millisecond
    trades = random_trades(rng, [a, b], 600, BASE_MS + 3_599_000 - 420_000, 420_000)
    trades += [
        trade(a, 10_000, "1.00000001", "0.00000001", BASE_MS + 3_599_000, True),
        trade(a, 10_001, "9.99999999", "3.12345678", BASE_MS + 3_599_000, False),
    ]
    batches = [trades[i::3] for i in range(3)]  # each batch spans all minutes: later batches
    # bring lower ids (late trades) to candles already served, and higher ones
    seen: list[dict] = []
    for batch in batches:
        folded = fold(settings, lake, batch)
        seen += batch
        assert folded.trades == len(batch)
        assert compare_candles(expected_candles(seen), _candles(settings, [a, b])) == []
        minutes = {(c["symbol"], c["open_time"]) for c in expected_candles(batch, [("1m", 60)])}
        assert set(folded.minutes) == minutes and len(folded.minutes) == len(minutes)
        for s in (a, b):
            ids = [t["t"] for t in batch if t["s"] == s]
            assert folded.trade_ranges[s] == (min(ids), max(ids))

    # replays fold nothing: only trades raw_trades did not hold are folded
    before = _candles(settings, [a, b])
    again = fold(settings, lake, batches[1] + batches[0][:5])
    assert (again.trades, again.minutes, again.trade_ranges) == (0, [], {})
    assert _candles(settings, [a, b]) == before
    # a replay mixed with one new, late trade (lowest id, lowest price) in a closed minute:
    # it becomes the open, first id and low of its candles, everything else unchanged
    late = trade(b, 0, "0.00000002", "2.00000000", BASE_MS + 3_599_000 - 400_000, False)
    mixed = fold(settings, lake, batches[2] + [late])
    assert mixed.trades == 1 and mixed.trade_ranges == {b: (0, 0)}
    assert mixed.minutes == [(b, at(BASE_MS + 3_540_000 - 360_000))]
    after = _candles(settings, [a, b])
    assert compare_candles(expected_candles(trades + [late]), after) == []
    candle = next(c for c in after if c["symbol"] == b and c["interval"] == "1h")
    assert (candle["open"], candle["first_trade_id"], candle["low"]) == (
        Decimal("0.00000002"), 0, Decimal("0.00000002"))  # fmt: skip
    assert all(c["lake"] == lake for c in after)


def test_open_and_close_follow_trade_ids_not_times(settings, unique):
    s = f"C{unique.upper()}USDT"
    t0 = BASE_MS + 30_000
    # id 7 is the earliest trade, id 9 the latest; ids 5 and 11 in the middle of the minute
    batch = [trade(s, 7, "10.0", "1.0", t0, False), trade(s, 9, "30.0", "1.0", t0 + 20_000, True),
             trade(s, 11, "20.0", "0.5", t0 + 10_000, True)]  # fmt: skip
    fold(settings, f"/lake/{unique}", batch, [CandleInterval("1m", 60)])
    fold(settings, f"/lake/{unique}", [trade(s, 5, "40.0", "0.25", t0 + 5_000, False)],
         [CandleInterval("1m", 60)])  # fmt: skip
    (c,) = _candles(settings, [s])
    assert (c["open"], c["first_trade_id"], c["close"], c["last_trade_id"]) == (
        Decimal("40"), 5, Decimal("20"), 11)  # fmt: skip
    assert (c["open_time"], c["close_time"]) == (at(BASE_MS), at(BASE_MS + 59_999))
    assert (c["volume"], c["quote_volume"], c["trades"]) == (Decimal("2.75"), Decimal("60"), 4)
    assert (c["taker_buy_volume"], c["taker_buy_quote_volume"]) == (Decimal("1.25"), Decimal("20"))
    assert (c["high"], c["low"]) == (Decimal("40"), Decimal("10"))
