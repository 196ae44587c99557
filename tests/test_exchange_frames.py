"""Pure tests of the aggTrade and kline frame builders (ingestion/exchange_frames.py)."""

from __future__ import annotations

import json

import pytest

from cryptoflow.core.streams import AGG_TRADE, KLINE_1M, kind_of_stream
from ingestion.exchange_frames import agg_trade_frame, kline_frame, rest_agg_trade_frame

# A Binance /api/v3/aggTrades item (documentation example) and a public-data klines row.
REST_AGG = {"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27781,
            "T": 1498793709153, "m": True, "M": True}  # fmt: skip
KLINE_ROW = ["1735689600000000", "93576.00000000", "93610.93000000", "93537.50000000",
             "93610.93000000", "8.21827000", "1735689659999999", "769057.19580660", "1832",
             "3.95590000", "370195.23087200", "0"]  # fmt: skip


def test_agg_trade_frame_is_binance_serialisation_byte_for_byte():
    frame = agg_trade_frame("BTCUSDT", 12345, "0.001", "100", 100, 105, 1672515782136, True)
    assert frame == (
        b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1672515782136,'
        b'"s":"BTCUSDT","a":12345,"p":"0.001","q":"100","f":100,"l":105,'
        b'"T":1672515782136,"m":true,"M":true}}'
    )
    doc = json.loads(frame)
    assert kind_of_stream(doc["stream"]) is AGG_TRADE and doc["data"]["e"] == AGG_TRADE.event


def test_agg_trade_frame_keeps_microseconds_event_time_and_flags():
    frame = agg_trade_frame(
        "ethusdt", 7, "3300.10000000", "0.50000000", 10, 12, 1735689600010866, False,
        is_best_match=False, event_time=1735689600011000,
    )  # fmt: skip
    data = json.loads(frame)["data"]
    assert data["T"] == 1735689600010866 and data["E"] == 1735689600011000
    assert data["s"] == "ETHUSDT" and data["m"] is False and data["M"] is False
    assert data["p"] == "3300.10000000" and data["q"] == "0.50000000"


def test_rest_agg_trade_frame_matches_the_builder():
    assert rest_agg_trade_frame("BNBBTC", REST_AGG) == agg_trade_frame(
        "BNBBTC", 26129, "0.01633102", "4.70443515", 27781, 27781, 1498793709153, True, True
    )
    without_m = {k: v for k, v in REST_AGG.items() if k != "M"}
    assert json.loads(rest_agg_trade_frame("BNBBTC", without_m))["data"]["M"] is True


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"p": "1e5"}, "p: expected a decimal"),
        ({"a": True}, "a: expected an integer"),
        ({"T": "12x"}, "T: expected an integer"),
        ({"m": "yes"}, "m: expected true/false"),
        ({"q": '1","x":"'}, "q: expected a decimal"),
    ],
)
def test_rest_agg_trade_frame_rejects_bad_values(change, match):
    with pytest.raises(ValueError, match=match):
        rest_agg_trade_frame("BNBBTC", {**REST_AGG, **change})


def test_rest_agg_trade_frame_names_missing_keys():
    with pytest.raises(ValueError, match="without f, l"):
        rest_agg_trade_frame("BNBBTC", {k: v for k, v in REST_AGG.items() if k not in "fl"})


def test_kline_frame_is_binance_serialisation_byte_for_byte():
    frame = kline_frame("BTCUSDT", KLINE_ROW)
    assert frame == (
        b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1735689659999999,'
        b'"s":"BTCUSDT","k":{"t":1735689600000000,"T":1735689659999999,"s":"BTCUSDT",'
        b'"i":"1m","f":-1,"L":-1,"o":"93576.00000000","c":"93610.93000000",'
        b'"h":"93610.93000000","l":"93537.50000000","v":"8.21827000","n":1832,"x":true,'
        b'"q":"769057.19580660","V":"3.95590000","Q":"370195.23087200","B":"0"}}}'
    )
    assert kind_of_stream(json.loads(frame)["stream"]) is KLINE_1M


def test_kline_frame_from_rest_array_ms_with_options():
    rest = [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100",
            "148976.11427815", 1499644799999, "2434.19055334", 308, "1756.87402397",
            "28.46694368", "0"]  # fmt: skip
    data = json.loads(
        kline_frame("bnbbtc", rest, interval="1w", event_time=1499644800123, closed=False)
    )
    assert data["stream"] == "bnbbtc@kline_1w"
    k = data["data"]["k"]
    assert data["data"]["E"] == 1499644800123 and k["i"] == "1w" and k["x"] is False
    assert (k["t"], k["T"], k["n"]) == (1499040000000, 1499644799999, 308)
    assert (k["o"], k["h"], k["l"], k["c"]) == ("0.01634790", "0.80000000", "0.01575800",
                                                "0.01577100")  # fmt: skip
    assert (k["v"], k["q"], k["V"], k["Q"]) == ("148976.11427815", "2434.19055334",
                                                "1756.87402397", "28.46694368")  # fmt: skip
    assert (k["f"], k["L"]) == (-1, -1)


def test_kline_frame_accepts_a_row_without_ignore_column():
    assert kline_frame("BTCUSDT", KLINE_ROW[:11]) == kline_frame("BTCUSDT", KLINE_ROW)


@pytest.mark.parametrize(
    ("row", "kwargs", "match"),
    [
        (KLINE_ROW[:10], {}, "10 columns"),
        ([*KLINE_ROW[:1], "nan", *KLINE_ROW[2:]], {}, "o: expected a decimal"),
        ([*KLINE_ROW[:8], "18.5", *KLINE_ROW[9:]], {}, "n: expected an integer"),
        (KLINE_ROW, {"interval": "1m/x"}, "interval"),
    ],
)
def test_kline_frame_rejects_bad_rows(row, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kline_frame("BTCUSDT", row, **kwargs)


def test_builders_reject_a_symbol_that_would_break_the_json():
    with pytest.raises(ValueError, match="symbol"):
        agg_trade_frame('BTC"USDT', 1, "1", "1", 1, 1, 1, True)
    with pytest.raises(ValueError, match="symbol"):
        kline_frame("", KLINE_ROW)
