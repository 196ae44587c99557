"""The simulator: one asyncio server speaking Binance's stream WebSocket and REST on one port.

Hot path: every few milliseconds the market loop takes the trades that are due, turns them into
the events of every stream kind someone listens to (``outbox.py``: trades, aggTrades, klines,
book tickers, with faults, recorded), and writes each connection's frames with ONE
``transport.write`` of pre-encoded frames (shared by every connection that listens to the same
streams in the same time unit). The websockets library handles the handshake, pings
(``ping_interval``), the pong timeout, close frames and the control requests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from operator import attrgetter
from typing import Any

from websockets.asyncio.server import Server, serve

from cryptoflow.core.config import Settings
from ingestion.simulator import frames
from ingestion.simulator.connection import SimConnection
from ingestion.simulator.feed import SymbolFeed
from ingestion.simulator.history import History
from ingestion.simulator.ids import IdStore
from ingestion.simulator.market import spec_for, split_rate
from ingestion.simulator.options import SimulatorOptions
from ingestion.simulator.outbox import Outbox
from ingestion.simulator.record import Recorder
from ingestion.simulator.rest import RestApi
from ingestion.simulator.streaming import StreamHub

log = logging.getLogger("cryptoflow.simulator")

MIN_TICK_S = 0.002  # shortest sleep of the market loop: batches frames at high rates
MAX_TRADES_PER_TICK = 4_000  # then yield to the event loop (I/O, handshakes) when behind
KLINE_TICK_S = 0.25  # longest sleep while klines are built: minutes close just after they end
_time_of = attrgetter("time")


class Simulator(StreamHub):
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
            market=self._market_of,
        )
        self.recorder = Recorder(self.options.record) if self.options.record else None
        self.outbox = Outbox(self.options, self.specs, self.ids, self.trades, self.recorder)
        self.connections: set[SimConnection] = set()
        self.feeds: list[SymbolFeed] = []
        self._feed_of: dict[str, SymbolFeed] = {}
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
        self.outbox.release_ids()
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
        self._feed_of = {f.symbol: f for f in self.feeds}
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
            if self.outbox.klines:
                self._broadcast(self.outbox.tick(self._horizon, time.time_ns() // 1000))
            active = [f for f in self.feeds if not f.finished]
            if not active and not self.finished.is_set():
                self.finished.set()
                log.info("simulator reached max_trades=%s per symbol", self.options.max_trades)
            if not active and not self.outbox.klines:
                await asyncio.sleep(KLINE_TICK_S)  # klines may be subscribed later
                continue
            due_ms = min((f.next_offset_ms for f in active), default=float("inf"))
            behind = due_ms <= (loop.time() - t0) * 1000
            pause = max(MIN_TICK_S, (due_ms - elapsed_ms) / 1000)
            if self.outbox.klines:
                pause = min(pause, KLINE_TICK_S)
            await asyncio.sleep(0 if behind else pause)

    def _horizon(self, symbol: str) -> int:
        """Every trade of ``symbol`` with ``T`` before this (ms) exists; never in the future."""
        now_ms = time.time_ns() // 1_000_000
        feed = self._feed_of.get(symbol)
        horizon = feed.horizon_ms if feed is not None else None
        return now_ms if horizon is None else min(horizon, now_ms)

    def _market_of(self, symbol: str) -> tuple[int, int] | None:
        """(market start, horizon) of ``symbol`` in ms, None before the market started."""
        feed = self._feed_of.get(symbol)
        return None if feed is None else (feed.start_ms, self._horizon(symbol))

    def publish(self, trades: list[frames.Trade], aggs: list[frames.AggTrade]) -> None:
        """Store a batch, then stream (and record) the events of every wanted stream kind."""
        if len(self.feeds) > 1:
            trades.sort(key=_time_of)  # stable: ids stay in order within a symbol
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
        if self.connections or self.outbox.busy_without_listeners:
            listening = {s for c in self.connections for s in c.subs.streams}
            now_us = time.time_ns() // 1000
            events = self.outbox.batch(
                trades, by_symbol_agg, by_symbol, listening, self._horizon, now_us
            )
            if self.connections:
                self._broadcast(events)
        else:
            self.outbox.streamed["trade"] += len(trades)

    # ----- status
    def stats(self) -> dict[str, Any]:
        """Counters for tests, the status line and ``GET /sim/stats``."""
        c = self.counters
        kinds = self.outbox.stats()
        return {
            "port": self.port,
            "seed": self.seed,
            "uptime_s": round(time.monotonic() - self.started_at, 3) if self.started_at else 0,
            "trades_generated": c["trades_generated"],
            "trades_streamed": kinds["trade"]["streamed"],
            "trades_skipped": kinds["trade"]["skipped"],
            "skipped_ranges": kinds["trade"]["skipped_ranges"],
            "malformed_sent": sum(k["malformed"] for k in kinds.values()),
            "streams": kinds,  # per stream kind: generated, streamed, skipped, malformed
            "kline_faults": list(self.outbox.fault_log),
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


def _kv(stats: dict[str, Any]) -> str:
    keys = ("trades_generated", "trades_streamed", "trades_skipped", "malformed_sent",
            "frames_sent", "connections_total", "rest_requests")  # fmt: skip
    return " ".join(f"{k}={stats[k]}" for k in keys)
