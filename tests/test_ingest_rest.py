"""The REST client against a real local HTTP server: 429 / 418 with Retry-After, bad requests."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

from ingestion.backfill import GapOutcome, fill_gap
from ingestion.gaps import Gap
from ingestion.rest import BinanceRest, RestError
from tests.conftest import make_settings


class _Exchange(http.server.BaseHTTPRequestHandler):
    """Answers historicalTrades from ``trades``; the first ``throttle`` answers are 429/418."""

    trades: list[dict] = []
    throttle: list[int] = []
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).requests.append(self.path)
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
        page = [t for t in type(self).trades if t["id"] >= int(q["fromId"])][: int(q["limit"])]
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
    _Exchange.throttle, _Exchange.requests = [], []
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
