"""Unit tests of ingestion across the stream kinds of the registry: subscriptions and URLs,
classification (fast path learned from the slow one) and routing by kind, each kind's
continuity (ids, closed klines, ms and µs), and REST rows rebuilt as stream frames."""

from __future__ import annotations

import json

import pytest

from cryptoflow.console.status import StageStatus, kind_frames, plain_line
from cryptoflow.core.config import Settings
from cryptoflow.core.streams import AGG_TRADE, BOOK_TICKER, KINDS, KLINE_1M, TRADE
from ingestion.connection import stream_urls
from ingestion.endpoints import endpoints, interval
from ingestion.exchange_frames import agg_trade_frame, kline_frame
from ingestion.frames import FALLBACK, Classifier, trade_frame
from ingestion.gaps import Gap, GapTracker, in_unit
from ingestion.status import IngestStats, StatusLine, status_record

MS = 1_700_000_040_000  # a minute's open time, ms
US = MS * 1000
ROW = [MS, "1.0", "2.5", "0.5", "1.5", "10", MS + 59_999, "15", 7, "4", "6", "0"]


def _book(u: int, symbol: str = "BTCUSDT") -> bytes:
    data = f'{{"u":{u},"s":"{symbol}","b":"25.35","B":"31.21","a":"25.36","A":"40.66"}}'
    return f'{{"stream":"{symbol.lower()}@bookTicker","data":{data}}}'.encode()


FRAMES = {  # kind -> (frame, the id it counts under)
    "trade": (trade_frame("BTCUSDT", 12, "1.5", "2", MS, True, True), 12),
    "aggTrade": (agg_trade_frame("BTCUSDT", 77, "1.5", "2", 10, 12, MS, False), 77),
    "kline_1m": (kline_frame("BTCUSDT", ROW), MS),
    "bookTicker": (_book(400900217), 400900217),
}


def test_subscriptions_cover_every_stream_1024_per_connection():
    s = Settings().replace(symbols=["BTCUSDT", "ETHUSDT", "BNBUSDT"], binance_ws_url="ws://h:1")
    (url,) = stream_urls(s)
    streams = url.split("streams=")[1].split("/")
    assert streams[:4] == ["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@kline_1m",
                           "btcusdt@bookTicker"]  # fmt: skip
    assert len(streams) == 12 and "timeUnit" not in url
    many = s.replace(symbols=[f"S{i}USDT" for i in range(300)])  # 1200 streams
    urls = stream_urls(many)
    counts = [len(u.split("streams=")[1].split("/")) for u in urls]
    assert counts == [1024, 176]
    assert {x for u in urls for x in u.split("streams=")[1].split("/")} == {
        f"s{i}usdt@{k}" for i in range(300) for k in KINDS
    }
    micro = stream_urls(s.replace(binance_time_unit="MICROSECOND", streams="trade"))
    assert micro == ["ws://h:1/stream?streams=btcusdt@trade/ethusdt@trade/bnbusdt@trade"
                     "&timeUnit=MICROSECOND"]  # fmt: skip


@pytest.mark.parametrize("name", list(FRAMES))
def test_each_kind_is_told_by_its_stream_and_the_fast_path_agrees(name):
    raw, ident = FRAMES[name]
    c = Classifier()
    slow = c(raw)  # the first frame teaches the shape
    assert c._shapes[name.encode()], "no fast shape learned"
    fast = c(raw)
    assert slow == fast
    assert (fast.kind, fast.key, fast.symbol, fast.record_id, fast.invalid) == (
        KINDS[name], b"BTCUSDT", "BTCUSDT", ident, None)  # fmt: skip
    # the shape holds for other values, and microsecond times
    bigger = raw.replace(
        str(ident).encode(), str(ident * 1000 if name == "kline_1m" else ident + 1).encode()
    )
    assert c(bigger).record_id == (ident * 1000 if name == "kline_1m" else ident + 1)
    assert len(c._shapes[name.encode()]) == 1


def test_only_closed_klines_count():
    c = Classifier()
    open_kline = kline_frame("BTCUSDT", ROW, closed=False)
    for _ in range(2):  # slow path, then fast path
        assert c(open_kline).record_id is None and c(open_kline).invalid is None
        assert c(kline_frame("BTCUSDT", ROW)).record_id == MS


def test_frames_of_a_kind_with_faults_keep_their_kind_or_fall_back():
    c = Classifier([TRADE, AGG_TRADE, BOOK_TICKER])
    raw, _ = FRAMES["aggTrade"]
    c(raw)
    missing = raw.replace(b'"a":77,', b"")
    assert (c(missing).invalid, c(missing).kind) == ("missing field a", AGG_TRADE)
    wrong_event = raw.replace(b'"e":"aggTrade"', b'"e":"trade"')  # the shape pins the event
    assert (c(wrong_event).invalid, c(wrong_event).kind) == ("not a aggTrade: e=trade", AGG_TRADE)
    cut = raw[:60]
    assert (c(cut).invalid, c(cut).kind, c(cut).key) == ("invalid JSON", AGG_TRADE, b"BTCUSDT")
    no_u = _book(5).replace(b'"u":5,', b"")
    assert (c(no_u).invalid, c(no_u).kind) == ("missing field u", BOOK_TICKER)
    # a kind not chosen, an unknown stream, no stream at all: no kind (the trade topic)
    kline, _ = FRAMES["kline_1m"]
    assert (c(kline).invalid, c(kline).kind) == ("stream kind kline_1m not ingested", None)
    depth = b'{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT"}}'
    assert (c(depth).invalid, c(depth).kind) == ("not a trade: e=depthUpdate", None)
    assert FALLBACK is TRADE
    # spacing: valid, by the slow path; the stream's symbol must be the payload's
    spaced = json.dumps(json.loads(raw)).encode()
    assert (c(spaced).record_id, c(spaced).invalid) == (77, None)
    other = raw.replace(b"btcusdt@", b"ethusdt@")
    assert c(other).symbol == "BTCUSDT"  # the payload's own symbol, as for trades


def test_id_kinds_find_gaps_and_duplicates():
    t = GapTracker.for_kind(AGG_TRADE, {"BTCUSDT": 10})
    assert t.observe("BTCUSDT", 11) == (None, False)
    assert t.observe("BTCUSDT", 15) == (Gap("BTCUSDT", 12, 14, 1, "aggTrade"), False)
    assert t.observe("BTCUSDT", 14) == (None, True)
    book = GapTracker.for_kind(BOOK_TICKER)
    assert book.observe("ETHUSDT", 100) == (None, False)
    assert book.observe("ETHUSDT", 103)[0] == Gap("ETHUSDT", 101, 102, 1, "bookTicker")


def test_kline_open_times_step_a_minute_in_ms_and_in_us():
    ms = GapTracker.for_kind(KLINE_1M, {"BTCUSDT": MS})
    assert ms.observe("BTCUSDT", MS + 60_000) == (None, False)
    gap, dup = ms.observe("BTCUSDT", MS + 240_000)  # 2 minutes missed
    assert gap == Gap("BTCUSDT", MS + 120_000, MS + 180_000, 60_000, "kline_1m") and not dup
    assert gap.size == 2
    us = GapTracker.for_kind(KLINE_1M, {"BTCUSDT": US})
    assert us.observe("BTCUSDT", US + 60_000_000) == (None, False)
    gap, _ = us.observe("BTCUSDT", US + 180_000_000)
    assert gap == Gap("BTCUSDT", US + 120_000_000, US + 120_000_000, 60_000_000, "kline_1m")
    # a run in ms resumed by one in µs: the last id is converted, no false gap or duplicate
    switched = GapTracker.for_kind(KLINE_1M, {"BTCUSDT": MS})
    assert switched.observe("BTCUSDT", US + 60_000_000) == (None, False)
    assert switched.observe("BTCUSDT", MS + 60_000) == (None, True)
    assert in_unit(US, MS) == MS and in_unit(MS, US) == US
    assert switched.claim_after("BTCUSDT", US + 240_000_000) == Gap(
        "BTCUSDT", US + 120_000_000, US + 240_000_000, 60_000_000, "kline_1m")  # fmt: skip


def test_rest_rows_become_the_frames_the_stream_sends():
    eps = endpoints(25)
    assert {name: e.weight for name, e in eps.items()} == {
        "historicalTrades": 25, "aggTrades": 4, "klines": 2}  # fmt: skip
    agg = eps["aggTrades"]
    row = {"a": 77, "p": "1.5", "q": "2", "f": 10, "l": 12, "T": MS, "m": False, "M": True}
    assert agg.row_id(row) == 77
    assert agg.frame("BTCUSDT", row, 77, 1) == FRAMES["aggTrade"][0]
    assert agg.params("BTCUSDT", 5, 9, 1) == {"symbol": "BTCUSDT", "fromId": 5, "limit": 5}
    kl = eps["klines"]
    assert kl.row_id(ROW) == MS and kl.final(ROW, MS + 60_000) and not kl.final(ROW, MS + 100)
    frame = Classifier()(kl.frame("BTCUSDT", ROW, MS, 60_000))
    assert (frame.kind, frame.record_id, frame.invalid) == (KLINE_1M, MS, None)
    assert kl.params("BTCUSDT", MS, MS + 120_000, 60_000) == {
        "symbol": "BTCUSDT", "interval": "1m", "startTime": MS, "endTime": MS + 120_000,
        "limit": 3}  # fmt: skip
    assert interval(MS, 60_000) == interval(US, 60_000_000) == "1m"
    assert interval(MS, 3_600_000) == "1h"


def test_status_has_counts_per_kind():
    stats = IngestStats()
    stats.kind("trade").frames = 5
    stats.add("gaps_found", kind="aggTrade")
    stats.add("gaps_counted", kind="bookTicker")
    line = StatusLine(stats).line()
    assert line.endswith("counted=1 kinds[trade=5 aggTrade=0 bookTicker=0]")
    record = status_record(stats, 0, 1.0)
    assert record["gaps_found"] == 1 and record["gaps_counted"] == 1
    assert record["kinds"]["aggTrade"]["gaps_found"] == 1
    assert record["kinds"]["trade"]["frames"] == 5
    # what the console shows of it
    row = StageStatus("ingest", "connected", counters={"frames": 5})
    row.kinds = kind_frames(record)
    assert plain_line(row) == "ingest: running frames=5 kinds[trade=5 aggTrade=0 bookTicker=0]"
    assert kind_frames({"frames": 5}) == {}  # a status file of an older ingestion
