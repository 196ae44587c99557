"""The REST client against a real local HTTP server: 429 / 418 with Retry-After, bad requests,
gap fills of trades, aggregate trades and 1 m klines, the time-unit header."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

from ingestion.backfill import GapOutcome, fill_gap, outcome_of
from ingestion.frames import classify
from ingestion.gaps import Gap
from ingestion.rest import TIME_UNIT_HEADER, BinanceRest, RestError
from tests.conftest import make_settings

MINUTE = 60_000
T0 = 1_700_000_040_000  # an open time, ms


class _Exchange(http.server.BaseHTTPRequestHandler):
    """Answers historicalTrades from ``trades``, aggTrades from ``aggs``, klines from
    ``klines`` (open times ``T0 + i * MINUTE``); the first ``throttle`` answers are 429/418."""

    trades: list[dict] = []
    aggs: list[dict] = []
    klines: list[list] = []
    throttle: list[int] = []
    requests: list[str] = []
    time_units: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).requests.append(self.path)
        type(self).time_units.append(self.headers.get(TIME_UNIT_HEADER))
        if type(self).throttle:
            code = type(self).throttle.pop(0)
            self.send_response(code)
            self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(b'{"code":-1003,"msg":"Too many requests"}')
            return
        if "symbol=NOPE" in self.path:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"code":-1121,"msg":"Invalid symbol."}')
            return
        q = dict(p.split("=") for p in self.path.split("?")[1].split("&"))
        if self.path.startswith("/api/v3/klines"):
            start, end = int(q["startTime"]), int(q["endTime"])
            page: list = [k for k in type(self).klines if start <= k[0] <= end]
        elif self.path.startswith("/api/v3/aggTrades"):
            page = [a for a in type(self).aggs if a["a"] >= int(q["fromId"])]
        else:
            page = [t for t in type(self).trades if t["id"] >= int(q["fromId"])]
        page = page[: int(q["limit"])]
        body = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("X-MBX-USED-WEIGHT-1M", "25")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def exchange(tmp_path) -> Iterator[tuple]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exchange)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Exchange.trades = [
        {
            "id": i,
            "price": "1.5",
            "qty": "2",
            "quoteQty": "3",
            "time": 1000 + i,
            "isBuyerMaker": bool(i % 2),
            "isBestMatch": True,
        }
        for i in range(100, 200)
        if i not in range(150, 155)  # 150-154 never served
    ]
    _Exchange.aggs = [
        {"a": i, "p": "1.5", "q": "2", "f": 3 * i, "l": 3 * i + 2, "T": 1000 + i, "m": False,
         "M": True}
        for i in range(100, 200)
        if i not in range(150, 155)
    ]  # fmt: skip
    _Exchange.klines = [
        [T0 + i * MINUTE, "1", "2", "0.5", "1.5", "10", T0 + i * MINUTE + 59_999, "15", 7, "4",
         "6", "0"]
        for i in range(0, 10)
        if i != 4
    ]  # fmt: skip
    _Exchange.throttle, _Exchange.requests, _Exchange.time_units = [], [], []
    s = make_settings(tmp_path, binance_rest_url=f"http://127.0.0.1:{server.server_port}")
    yield s, _Exchange
    server.shutdown()


def test_429_and_418_wait_for_retry_after(exchange):
    s, ex = exchange
    ex.throttle = [429, 418]
    rest = BinanceRest(s, threading.Event())
    started = time.monotonic()
    page = rest.historical_trades("BTCUSDT", 120, 5)
    assert [t["id"] for t in page] == [120, 121, 122, 123, 124]
    assert rest.throttled == 2 and len(ex.requests) == 3
    assert time.monotonic() - started >= 2.0  # Retry-After: 1, twice
    assert rest.budget.used == 25  # the exchange's reported weight


def test_bad_request_is_a_clear_error(exchange):
    s, _ = exchange
    with pytest.raises(RestError, match=r"HTTP 400 .*Invalid symbol"):
        BinanceRest(s, threading.Event()).historical_trades("NOPE", 1)


def test_fill_gap_publishes_what_rest_serves_and_records_the_rest(exchange):
    s, _ = exchange
    published: list[int] = []
    out = fill_gap(
        Gap("BTCUSDT", 140, 210),
        BinanceRest(s, threading.Event()),
        lambda sym, tid, frame: published.append(tid),
        GapOutcome("BTCUSDT", 140, 210, 71),
    )
    assert published == [i for i in range(140, 200) if not 150 <= i < 155]
    assert out.filled == 55 and out.unfillable == 16
    assert out.unfillable_ranges == [[150, 154], [200, 210]]
    assert out.reason == "not served by historicalTrades"


def test_fill_agg_trade_gap_publishes_agg_trade_frames_and_records_the_rest(exchange):
    s, ex = exchange
    frames: dict[int, bytes] = {}
    out = fill_gap(
        Gap("ETHUSDT", 140, 210, 1, "aggTrade"),
        BinanceRest(s, threading.Event()),
        lambda sym, aid, frame: frames.setdefault(aid, frame),
    )
    assert list(frames) == [i for i in range(140, 200) if not 150 <= i < 155]
    assert (out.kind, out.filled, out.unfillable) == ("aggTrade", 55, 16)
    assert out.unfillable_ranges == [[150, 154], [200, 210]]
    assert out.reason == "not served by aggTrades"
    got = classify(frames[140])
    assert (got.kind.name, got.symbol, got.record_id, got.invalid) == (
        "aggTrade", "ETHUSDT", 140, None)  # fmt: skip
    assert frames[140].startswith(b'{"stream":"ethusdt@aggTrade","data":{"e":"aggTrade","E":1140,')
    assert all(p.startswith("/api/v3/aggTrades?symbol=ETHUSDT&fromId=") for p in ex.requests)
    assert ex.time_units == [None] * len(ex.requests)  # milliseconds: Binance's default


def test_fill_kline_gap_by_minutes_with_the_time_unit_header(exchange):
    s, ex = exchange
    s = s.replace(binance_time_unit="MICROSECOND")
    frames: dict[int, bytes] = {}
    gap = Gap("BTCUSDT", T0 + 2 * MINUTE, T0 + 11 * MINUTE, MINUTE, "kline_1m")
    rest = BinanceRest(s, threading.Event())
    out = fill_gap(gap, rest, lambda sym, t, f: frames.setdefault(t, f), outcome_of(gap))
    assert list(frames) == [T0 + i * MINUTE for i in (2, 3, 5, 6, 7, 8, 9)]
    assert (out.missing, out.filled, out.unfillable) == (10, 7, 3)
    assert out.unfillable_ranges == [[T0 + 4 * MINUTE, T0 + 4 * MINUTE],
                                     [T0 + 10 * MINUTE, T0 + 11 * MINUTE]]  # fmt: skip
    kline = classify(frames[T0 + 2 * MINUTE])
    assert (kline.kind.name, kline.record_id, kline.invalid) == ("kline_1m", T0 + 2 * MINUTE, None)
    assert b'"x":true' in frames[T0 + 2 * MINUTE]
    assert "interval=1m" in ex.requests[0] and f"startTime={T0 + 2 * MINUTE}" in ex.requests[0]
    assert set(ex.time_units) == {"MICROSECOND"}
