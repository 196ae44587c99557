"""Unit tests of ingestion's pure parts: frame classification, gaps, CSV lines, limiters."""

from __future__ import annotations

import json
import random

import pytest

from ingestion.connection import SendLimiter, backoff_delays, combined_stream_url
from ingestion.csv_replay import parse_line, symbol_of, to_millis
from ingestion.frames import UNKNOWN_KEY, classify, rest_trade_frame, trade_frame
from ingestion.gaps import Gap, GapTracker
from ingestion.rest import WeightBudget

GOOD = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1700000000123,"s":"BTCUSDT",'
    b'"t":12345,"p":"90000.01000000","q":"0.00100000","T":1700000000120,"m":true,"M":true}}'
)


def test_fast_path_recognises_binance_trade():
    f = classify(GOOD)
    assert (f.key, f.symbol, f.trade_id, f.invalid) == (b"BTCUSDT", "BTCUSDT", 12345, None)


def test_slow_path_accepts_other_spacing_and_order():
    doc = json.loads(GOOD)
    doc["data"] = dict(reversed(list(doc["data"].items())))
    f = classify(json.dumps(doc).encode())
    assert (f.symbol, f.trade_id, f.invalid) == ("BTCUSDT", 12345, None)


@pytest.mark.parametrize(
    "raw, reason, key",
    [
        (b'{"e":"trade","E":1,"s":"ETHUSDT","t":', "invalid JSON", b"ETHUSDT"),
        (b"\xff\xfe", "not UTF-8", UNKNOWN_KEY),
        (b"[1,2]", "not a JSON object", UNKNOWN_KEY),
        (
            b'{"e":"simulatorNoise","E":1,"s":"BNBUSDT"}',
            "not a trade: e=simulatorNoise",
            b"BNBUSDT",
        ),
        (
            b'{"e":"trade","E":1,"s":"BTCUSDT","p":90000.01,"m":"maybe"}',
            "missing field t",
            b"BTCUSDT",
        ),
        (GOOD.replace(b'"t":12345', b'"t":"12345"'), "wrong type for t", b"BTCUSDT"),
        (GOOD.replace(b'"m":true', b'"m":1'), "wrong type for m", b"BTCUSDT"),
        (GOOD.replace(b'"E":1700000000123', b'"E":true'), "wrong type for E", b"BTCUSDT"),
        (b'{"result":null,"id":1}', "not a trade event", UNKNOWN_KEY),
    ],
)
def test_invalid_frames_name_the_reason_and_keep_a_key(raw, reason, key):
    f = classify(raw)
    assert f.invalid == reason
    assert f.key == key
    assert f.trade_id is None


def test_server_shutdown_event_is_recognised():
    raw = b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}'
    f = classify(raw)
    assert f.event == "serverShutdown"
    assert f.invalid == "not a trade: e=serverShutdown"


def test_stream_symbol_mismatch_is_not_trusted_on_the_fast_path():
    raw = GOOD.replace(b"btcusdt@trade", b"ethusdt@trade")
    assert classify(raw).symbol == "BTCUSDT"  # slow path uses the payload's own symbol


def test_trade_frame_is_binance_shape():
    frame = trade_frame(
        "BTCUSDT",
        12345,
        "90000.01000000",
        "0.00100000",
        1700000000120,
        True,
        True,
        event_time=1700000000123,
    )
    assert frame == GOOD
    rest = {
        "id": 7,
        "price": "1.5",
        "qty": "2.0",
        "quoteQty": "3.0",
        "time": 99,
        "isBuyerMaker": False,
        "isBestMatch": True,
    }
    doc = json.loads(rest_trade_frame("ETHUSDT", rest))
    assert doc == {
        "stream": "ethusdt@trade",
        "data": {
            "e": "trade",
            "E": 99,
            "s": "ETHUSDT",
            "t": 7,
            "p": "1.5",
            "q": "2.0",
            "T": 99,
            "m": False,
            "M": True,
        },
    }
    assert classify(rest_trade_frame("ETHUSDT", rest)).trade_id == 7


def test_gap_tracker_finds_gaps_and_duplicates():
    t = GapTracker({"BTCUSDT": 10})
    assert t.observe("BTCUSDT", 11) == (None, False)
    assert t.observe("BTCUSDT", 15) == (Gap("BTCUSDT", 12, 14), False)
    assert t.observe("BTCUSDT", 13) == (None, True)
    assert t.observe("BTCUSDT", 15) == (None, True)
    assert t.observe("ETHUSDT", 500) == (None, False)  # first sighting: nothing to compare
    assert Gap("X", 12, 14).size == 3


def test_csv_lines_ms_and_us_and_malformed():
    ms = parse_line("100,90000.01,0.5,45000.005,1700000000120,True,True\n")
    assert (ms.trade_id, ms.price, ms.time_ms, ms.is_buyer_maker) == (
        100,
        "90000.01",
        1700000000120,
        True,
    )
    us = parse_line("101,90000.02,0.5,45000.01,1735689600123456,false,true")
    assert us.time_ms == 1735689600123 and us.is_buyer_maker is False
    assert to_millis(1735689600123456) == 1735689600123
    assert parse_line("garbage") == "malformed CSV line: 1 columns, expected 7"
    assert parse_line("x,1,1,1,1,true,true") == "malformed CSV line: id is not an integer"
    assert parse_line("1,abc,1,1,1,true,true") == "malformed CSV line: price/qty is not a decimal"
    assert parse_line("1,1,1,1,1,yes,true") == (
        "malformed CSV line: isBuyerMaker/isBestMatch is not true/false"
    )


def test_csv_symbol_comes_from_the_file_name(tmp_path):
    assert symbol_of(tmp_path / "BTCUSDT-trades-2025-01-02.zip") == "BTCUSDT"
    with pytest.raises(Exception, match="SYMBOL-trades-YYYY-MM-DD.zip or .csv"):
        symbol_of(tmp_path / "trades.csv")


def test_send_limiter_allows_at_most_n_per_second():
    now = [0.0]
    lim = SendLimiter(5, clock=lambda: now[0])
    for _ in range(5):
        assert lim.delay() == 0
        lim.sent.append(now[0])
    assert lim.delay() == pytest.approx(1.0)
    now[0] = 0.6
    assert lim.delay() == pytest.approx(0.4)
    now[0] = 1.0
    assert lim.delay() == 0


def test_backoff_grows_exponentially_with_jitter_and_caps():
    delays = backoff_delays(0.5, 8.0, random.Random(1))
    got = [next(delays) for _ in range(8)]
    for n, d in enumerate(got):
        cap = min(8.0, 0.5 * 2**n)
        assert cap / 2 <= d <= cap
    assert len(set(got)) == len(got)  # jittered


def test_weight_budget_waits_for_next_minute():
    now = [120.0]
    b = WeightBudget(100, clock=lambda: now[0])
    assert b.wait_seconds(25) == 0
    b.spend(25, reported=90)  # the exchange's own count wins
    assert b.wait_seconds(25) == pytest.approx(60.05)
    now[0] = 180.0
    assert b.wait_seconds(25) == 0


def test_combined_stream_url():
    assert combined_stream_url("ws://h:1/", ["BTCUSDT", "ETHUSDT"]) == (
        "ws://h:1/stream?streams=btcusdt@trade/ethusdt@trade"
    )
