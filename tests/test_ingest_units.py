"""Unit tests of ingestion's pure parts: frame classification, gaps, CSV lines, limiters, the
connection watchdog (against an in-memory fake socket) and the producer's handling of a failed
delivery (against a broker that does not exist)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from confluent_kafka import KafkaError
from websockets.exceptions import ConnectionClosedError

from cryptoflow.core.config import Settings
from ingestion.connection import SendLimiter, Supervisor, backoff_delays, combined_stream_url
from ingestion.csv_replay import parse_line, symbol_of, to_millis
from ingestion.frames import UNKNOWN_KEY, Frame, classify, rest_trade_frame, trade_frame
from ingestion.gaps import Gap, GapTracker
from ingestion.producer import FrameProducer
from ingestion.rest import WeightBudget
from ingestion.status import IngestStats
from tests.conftest import free_port

GOOD = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1700000000123,"s":"BTCUSDT",'
    b'"t":12345,"p":"90000.01000000","q":"0.00100000","T":1700000000120,"m":true,"M":true}}'
)


def test_fast_path_recognises_binance_trade():
    f = classify(GOOD)
    assert (f.key, f.symbol, f.record_id, f.invalid) == (b"BTCUSDT", "BTCUSDT", 12345, None)


def test_slow_path_accepts_other_spacing_and_order():
    doc = json.loads(GOOD)
    doc["data"] = dict(reversed(list(doc["data"].items())))
    f = classify(json.dumps(doc).encode())
    assert (f.symbol, f.record_id, f.invalid) == ("BTCUSDT", 12345, None)


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
    assert f.record_id is None


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
    assert classify(rest_trade_frame("ETHUSDT", rest)).record_id == 7


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
    assert combined_stream_url("ws://h:1/", ["btcusdt@trade", "ethusdt@aggTrade"]) == (
        "ws://h:1/stream?streams=btcusdt@trade/ethusdt@aggTrade"
    )
    assert combined_stream_url("ws://h:1", ["btcusdt@trade"], "MICROSECOND") == (
        "ws://h:1/stream?streams=btcusdt@trade&timeUnit=MICROSECOND"
    )


class FakeSocket:
    """Just what ``Session`` uses of a websockets connection: ``recv`` and ``close``."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed_at: float | None = None  # monotonic

    async def recv(self, decode: bool = False) -> bytes:
        raw = await self.inbox.get()
        if raw is None:
            raise ConnectionClosedError(None, None)
        return raw

    async def close(self) -> None:
        self.closed_at = self.closed_at or time.monotonic()
        self.inbox.put_nowait(None)


async def _watch(
    feed: list[bytes], every_s: float, handle_s: float, run_s: float
) -> tuple[list[float | None], IngestStats, list[float]]:
    """Run a ``Supervisor`` (stall timeout 1 s) for ``run_s`` over fake sockets. The first
    socket receives ``feed`` one frame per ``every_s``, then stays silent; the first frame's
    handler takes ``handle_s`` (a producer held by back-pressure). Returns, per socket opened,
    when it was closed (None: not before the stop); the stats; when each frame's handling
    ended. Times are seconds since the start."""
    sockets: list[FakeSocket] = []
    senders: list[asyncio.Task] = []
    handled: list[float] = []
    start = time.monotonic()

    @contextlib.asynccontextmanager
    async def connector(url: str) -> AsyncIterator[FakeSocket]:
        ws = FakeSocket()
        if not sockets:
            senders.append(asyncio.create_task(_send(ws)))
        sockets.append(ws)
        yield ws

    async def _send(ws: FakeSocket) -> None:
        for raw in feed:
            ws.inbox.put_nowait(raw)
            await asyncio.sleep(every_s)

    async def handler(raw: bytes, received_ms: int, conn_id: str) -> Frame:
        if not handled:
            await asyncio.sleep(handle_s)
        handled.append(time.monotonic() - start)
        return classify(raw)

    settings = Settings().replace(
        ws_stall_timeout_s=1, ws_backoff_initial_ms=10, ws_backoff_max_ms=10
    )
    stats, stop = IngestStats(), asyncio.Event()
    sup = Supervisor(settings, handler, stats, stop, url="ws://fake", connector=connector)
    run = asyncio.create_task(sup.run())
    await asyncio.sleep(run_s)
    closed = [ws.closed_at and ws.closed_at - start for ws in sockets]
    stop.set()
    await run
    return closed, stats, handled


def test_watchdog_ignores_time_spent_in_the_handler():
    """A handler held 3x the stall timeout (Kafka down, buffer full) is not exchange silence."""
    feed = [GOOD.replace(b'"t":12345', f'"t":{12345 + i}'.encode()) for i in range(60)]
    closed, stats, handled = asyncio.run(_watch(feed, every_s=0.1, handle_s=3.0, run_s=4.0))
    assert closed == [None]  # one socket, never closed by the watchdog
    assert stats.reconnects == 0
    assert handled[0] >= 3.0
    assert len(handled) >= 30  # the frames queued meanwhile, then the live ones


def test_watchdog_still_closes_a_silent_socket():
    """Waiting on the socket counts: silence after a slow handler is found one timeout later."""
    closed, stats, handled = asyncio.run(_watch([GOOD], every_s=0, handle_s=1.5, run_s=4.0))
    assert handled and handled[0] >= 1.5
    assert len(closed) >= 2 and stats.reconnects >= 1  # the silent socket was replaced
    assert closed[0] is not None and closed[0] >= handled[0] + 1.0  # waited 1 s after handling


class FailedDelivery:
    """What ``FrameProducer._on_delivery`` reads of a failed message."""

    def topic(self) -> str:
        return "trades"

    def key(self) -> bytes:
        return b"BTCUSDT"

    def value(self) -> bytes:
        return GOOD

    def headers(self) -> list[tuple[str, bytes]]:
        return [("source", b"live")]

    def timestamp(self) -> tuple[int, int]:
        return 1, 1700000000123


TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT)


@contextlib.contextmanager
def offline_producer(buffer: int) -> Iterator[FrameProducer]:
    """A producer whose broker does not exist, so whatever it accepts stays queued."""
    settings = Settings().replace(kafka_port=free_port(), producer_buffer_messages=buffer)
    p = FrameProducer(settings, IngestStats())
    try:
        yield p
    finally:
        p.fatal = "test over"  # ends a callback still waiting for room (the old behaviour)
        p._producer.purge()
        p._producer.poll(0)


def test_failed_delivery_with_a_full_buffer_does_not_block_the_callback():
    """Re-producing inside the callback waited for a slot the failed frame itself holds until
    the callback returns: with a full buffer, the poll (the event loop) never came back."""
    with offline_producer(buffer=1) as p:
        assert p.try_produce("trades", b"ETHUSDT", GOOD, 1, [])  # the buffer is full
        callback = threading.Thread(
            target=p._on_delivery, args=(TIMED_OUT, FailedDelivery()), daemon=True
        )
        callback.start()
        callback.join(5)
        assert not callback.is_alive()
        assert p.stats.delivery_errors == 1
        p.poll(0)  # still no room: the failed frame waits, counted as buffered, not lost
        # len(librdkafka) also counts protocol requests queued for the absent broker
        assert len(p._failed) == 1 and p.buffered >= 2


def test_failed_delivery_is_produced_again_once_there_is_room():
    with offline_producer(buffer=2) as p:
        assert p.try_produce("trades", b"ETHUSDT", GOOD, 1, [])
        p._on_delivery(TIMED_OUT, FailedDelivery())
        p.poll(0)
        # back in librdkafka's queue, whose length also counts protocol requests for the broker
        assert not p._failed and len(p._producer) >= 2
        assert p.produced == 2
