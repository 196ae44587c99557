"""The simulator: one asyncio server speaking Binance's stream WebSocket and REST on one port.

Hot path: every few milliseconds the market loop takes the trades that are due, records them,
and writes each connection's frames with ONE ``transport.write`` of pre-encoded frames (shared
by every connection that listens to the same streams). The websockets library handles the
handshake, pings (``ping_interval``), the pong timeout, close frames and the control requests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import time
from operator import attrgetter
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from cryptoflow.core.config import Settings
from ingestion.simulator import control, frames
from ingestion.simulator.connection import SimConnection, http_response
from ingestion.simulator.faults import IdSkipper, MalformedInjector
from ingestion.simulator.feed import SymbolFeed
from ingestion.simulator.history import History
from ingestion.simulator.ids import IdStore
from ingestion.simulator.market import spec_for, split_rate
from ingestion.simulator.options import SimulatorOptions
from ingestion.simulator.record import Recorder
from ingestion.simulator.rest import RestApi

log = logging.getLogger("cryptoflow.simulator")

MIN_TICK_S = 0.002  # shortest sleep of the market loop: batches frames at high rates
MAX_TRADES_PER_TICK = 4_000  # then yield to the event loop (I/O, handshakes) when behind
MAX_WRITE_BUFFER = 64 * 2**20  # a client this far behind is dropped as a slow consumer
_time_of = attrgetter("time")


class Simulator:
    """A running simulator inside an event loop: ``await start()``, ``await stop()``."""

    def __init__(self, settings: Settings, options: SimulatorOptions) -> None:
        self.options = options.resolve(settings)
        self.seed = self.options.seed if self.options.seed is not None else random.randrange(2**32)
        self.specs = [spec_for(s) for s in self.options.symbols]
        self.ids = IdStore(settings.data_dir)
        self.trades: dict[str, History[frames.Trade]] = {
            s.symbol: History(self.options.retention) for s in self.specs
        }
        self.aggs: dict[str, History[frames.AggTrade]] = {
            s.symbol: History(self.options.retention) for s in self.specs
        }
        self.rest = RestApi(
            self.specs,
            self.trades,
            self.aggs,
            self.options.weight_limit,
            {"/sim/stats": self.stats},
        )
        self.skipper = IdSkipper(self.options.skip_ids, self.options.skip_every)
        self.malformed = MalformedInjector(self.options.malformed_every)
        self.recorder = Recorder(self.options.record) if self.options.record else None
        self.connections: set[SimConnection] = set()
        self.feeds: list[SymbolFeed] = []
        self._trade_streams = {s.symbol: s.symbol.lower() + "@trade" for s in self.specs}
        self.finished = asyncio.Event()
        self._client_seen = asyncio.Event()
        self.port = 0
        self.started_at = 0.0
        self.counters: collections.Counter[str] = collections.Counter()
        self._server: Server | None = None
        self._tasks: list[asyncio.Task] = []

    # ----- lifecycle
    async def start(self) -> None:
        opts = self.options
        # a subclass per simulator: two simulators in one process keep their own limits
        connection_class = type(
            "SimConnection",
            (SimConnection,),
            {"pong_delay": opts.pong_delay, "message_limit": opts.message_limit},
        )
        self._server = await serve(
            self._handle_ws,  # type: ignore[arg-type]  # create_connection: SimConnections
            opts.host,
            opts.port,
            process_request=self._process_request,
            compression=None,
            ping_interval=opts.ping_interval,
            ping_timeout=opts.pong_timeout,
            max_size=2**16,
            create_connection=connection_class,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks.append(asyncio.create_task(self._run_market(), name="sim-market"))
        if opts.drop_every:
            self._tasks.append(asyncio.create_task(self._every(opts.drop_every, self.drop_all)))
        if opts.shutdown_every:
            self._tasks.append(
                asyncio.create_task(self._every(opts.shutdown_every, self.announce_shutdown))
            )
        log.info(
            "simulator listening ws=ws://%s:%d rest=http://%s:%d symbols=%s rate=%s/s seed=%d "
            "max_trades=%s",
            opts.host, self.port, opts.host, self.port, ",".join(opts.symbols), opts.rate,
            self.seed, opts.max_trades,
        )  # fmt: skip

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        for feed in self.feeds:
            feed.release_ids()
        if self.recorder:
            self.recorder.close()
        log.info("simulator stopped %s", _kv(self.stats()))

    # ----- market
    async def _run_market(self) -> None:
        """Start the market now, or with ``wait_for_client`` when the first stream client
        connects (so a test's oracle record holds only trades a client could receive)."""
        if self.options.wait_for_client:
            await self._client_seen.wait()
        rates = split_rate(self.specs, self.options.rate)
        start_ms = int(time.time() * 1000)
        self.feeds = [
            SymbolFeed(s, rates[s.symbol], self.seed, self.ids, start_ms, self.options.max_trades)
            for s in self.specs
        ]
        self.started_at = time.monotonic()
        await self._market_loop()

    async def _market_loop(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while True:
            elapsed_ms = (loop.time() - t0) * 1000
            trades: list[frames.Trade] = []
            aggs: list[frames.AggTrade] = []
            for feed in self.feeds:
                feed.take_due(elapsed_ms, MAX_TRADES_PER_TICK // len(self.feeds), trades, aggs)
            if trades:
                self.publish(trades, aggs)
            active = [f for f in self.feeds if not f.finished]
            if not active:
                self.finished.set()
                log.info("simulator reached max_trades=%s per symbol", self.options.max_trades)
                return
            due_ms = min(f.next_offset_ms for f in active)
            behind = due_ms <= (loop.time() - t0) * 1000
            await asyncio.sleep(0 if behind else max(MIN_TICK_S, (due_ms - elapsed_ms) / 1000))

    def publish(self, trades: list[frames.Trade], aggs: list[frames.AggTrade]) -> None:
        """Record and store a batch, then stream it (minus skipped ids, plus malformed)."""
        if len(self.feeds) > 1:
            trades.sort(key=_time_of)  # stable: ids stay in order within a symbol
            aggs.sort(key=_time_of)
        if self.recorder:
            self.recorder.write(trades)
        by_symbol: dict[str, list[frames.Trade]] = collections.defaultdict(list)
        for t in trades:
            by_symbol[t.symbol].append(t)
        for symbol, rows in by_symbol.items():
            self.trades[symbol].extend(rows)
        by_symbol_agg: dict[str, list[frames.AggTrade]] = collections.defaultdict(list)
        for a in aggs:
            by_symbol_agg[a.symbol].append(a)
        for symbol, agg_rows in by_symbol_agg.items():
            self.aggs[symbol].extend(agg_rows)
        self.counters["trades_generated"] += len(trades)
        if self.connections or self.skipper.run or self.malformed.every:
            events = self._events(trades, aggs)  # faults advance without listeners too
            if self.connections:
                self._broadcast(events)
        else:
            self.counters["trades_streamed"] += len(trades)

    def _events(
        self, trades: list[frames.Trade], aggs: list[frames.AggTrade]
    ) -> list[tuple[str, str]]:
        """(stream, payload) to stream: trades minus skipped ids, plus malformed frames, plus
        aggregate trades when someone listens to them."""
        events: list[tuple[str, str]] = []
        streams = self._trade_streams
        if not self.skipper.run and not self.malformed.every:
            events = [(streams[t.symbol], t.payload) for t in trades]
            streamed = len(trades)
        else:
            streamed = 0
            skip, after_trade = self.skipper.skip, self.malformed.after_trade
            for t in trades:
                if skip(t.symbol, t.id):
                    continue
                stream = streams[t.symbol]
                events.append((stream, t.payload))
                streamed += 1
                kind = after_trade()
                if kind:
                    events.append((stream, frames.malformed_payload(kind, t.symbol, t.event_time)))
        self.counters["trades_streamed"] += streamed
        if aggs and any(s.endswith("@aggTrade") for c in self.connections for s in c.subs.streams):
            events += [(a.symbol.lower() + "@aggTrade", a.payload) for a in aggs]
        return events

    def _broadcast(self, events: list[tuple[str, str]]) -> None:
        if not events:
            return
        encoded: dict[bool, list[bytes]] = {}
        present = {stream for stream, _ in events}
        for conn in list(self.connections):
            if not conn.is_open or not conn.subs.streams:
                continue
            combined = conn.subs.combined
            if combined not in encoded:
                encoded[combined] = frames.encode_frames(events, combined)
            subs = set(conn.subs.streams)
            if present <= subs:  # the common case: it listens to everything in the batch
                chunk = encoded[combined]
            else:
                chunk = [
                    f for (s, _), f in zip(events, encoded[combined], strict=True) if s in subs
                ]
            if chunk:
                self._write(conn, b"".join(chunk), len(chunk))

    def _write(self, conn: SimConnection, data: bytes, n_frames: int) -> None:
        transport = conn.transport
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.counters["slow_consumer_drops"] += 1
            log.warning("dropping slow consumer %s buffered=%d", conn.remote_address,
                        transport.get_write_buffer_size())  # fmt: skip
            transport.abort()
            return
        transport.write(data)
        self.counters["frames_sent"] += n_frames

    # ----- faults
    async def _every(self, seconds: float, action: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            await action()

    async def drop_all(self) -> None:
        """Abort every client connection (no close frame), like a network failure."""
        n = 0
        for conn in list(self.connections):
            conn.transport.abort()
            n += 1
        self.counters["connections_dropped"] += n
        log.info("fault: dropped connections=%d", n)

    async def announce_shutdown(self) -> None:
        """Send ``serverShutdown`` to every client, then close them after the grace period."""
        conns = [c for c in self.connections if c.is_open]
        now_ms = int(time.time() * 1000)
        for conn in conns:
            text = frames.server_shutdown(now_ms, conn.subs.combined)
            conn.transport.write(frames.text_frame(text.encode()))
        self.counters["shutdowns_sent"] += len(conns)
        log.info("fault: serverShutdown sent connections=%d", len(conns))
        await asyncio.sleep(self.options.shutdown_grace)
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close(1001, "server shutdown")

    # ----- connections
    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if control.streams_from_path(request.path) is None:
                return http_response(404, b'{"code":-1000,"msg":"Unknown stream endpoint."}', {})
            return None
        ip = conn.remote_address[0] if conn.remote_address else "?"
        r = self.rest.handle(request.path, ip)
        return http_response(r.status, r.body, r.headers)

    async def _handle_ws(self, conn: SimConnection) -> None:
        path = conn.request.path if conn.request is not None else ""  # set by the handshake
        combined, streams = control.streams_from_path(path) or (False, [])
        conn.subs.combined = combined
        conn.subs.add(streams)
        self.connections.add(conn)
        self._client_seen.set()
        self.counters["connections_total"] += 1
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(
            self.options.max_lifetime,
            lambda: asyncio.ensure_future(conn.close(1000, "connection lifetime exceeded")),
        )
        try:
            async for message in conn:
                reply = control.handle(message, conn.subs)
                await conn.send(_dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            expiry.cancel()
            self.connections.discard(conn)
            if conn.over_message_limit:
                self.counters["message_limit_disconnects"] += 1

    # ----- status
    def stats(self) -> dict[str, Any]:
        """Counters for tests, the status line and ``GET /sim/stats``."""
        c = self.counters
        return {
            "port": self.port,
            "seed": self.seed,
            "uptime_s": round(time.monotonic() - self.started_at, 3) if self.started_at else 0,
            "trades_generated": c["trades_generated"],
            "trades_streamed": c["trades_streamed"],
            "trades_skipped": self.skipper.skipped,
            "skipped_ranges": [list(r) for r in self.skipper.ranges],
            "malformed_sent": self.malformed.sent,
            "frames_sent": c["frames_sent"],
            "connections_open": len(self.connections),
            "connections_total": c["connections_total"],
            "connections_dropped": c["connections_dropped"],
            "shutdowns_sent": c["shutdowns_sent"],
            "message_limit_disconnects": c["message_limit_disconnects"],
            "slow_consumer_drops": c["slow_consumer_drops"],
            "rest_requests": self.rest.requests,
            "rest_rejected_429": self.rest.rejected_429,
            "rest_rejected_418": self.rest.rejected_418,
            "generated_per_symbol": {f.symbol: f.generated for f in self.feeds},
            "last_trade_id": {s: h.rows[-1].id for s, h in self.trades.items() if h.rows},
            "finished": self.finished.is_set(),
        }


def _dumps(reply: dict) -> str:
    return json.dumps(reply, separators=(",", ":"))


def _kv(stats: dict[str, Any]) -> str:
    keys = ("trades_generated", "trades_streamed", "trades_skipped", "malformed_sent",
            "frames_sent", "connections_total", "rest_requests")  # fmt: skip
    return " ".join(f"{k}={stats[k]}" for k in keys)
