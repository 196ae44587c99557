"""``cryptoflow simulate``: a local exchange speaking Binance's spot protocol, with faults."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from cryptoflow.core.config import Settings
from ingestion.simulator.options import SimulatorOptions

log = logging.getLogger("cryptoflow.simulator")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a local Binance-protocol exchange simulator (WebSocket + REST, fault flags)",
        description=(
            "Serve Binance's spot stream WebSocket (/stream?streams=..., /ws/<stream>, "
            "SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS) with the streams <symbol>@trade, "
            "@aggTrade (trades of one taker order at one price), @kline_1m (computed from the "
            "trades sent: an open kline every 2 s, one closed kline per minute) and "
            "@bookTicker (after each aggregate trade, bid < price < ask), and REST "
            "(/api/v3/ping, time, exchangeInfo, trades, historicalTrades, aggTrades, klines) on "
            "one port, with believable, seeded trades. Times are ms, or µs with "
            "timeUnit=MICROSECOND (stream URL, REST query) or the X-MBX-TIME-UNIT header. Ids "
            "continue across runs on the same CRYPTOFLOW_DATA_DIR. Host and port default to "
            "CRYPTOFLOW_SIM_HOST / _SIM_PORT, symbols to CRYPTOFLOW_SYMBOLS. Stop with Ctrl-C "
            "or SIGTERM. Details: docs/simulator.md."
        ),
        epilog=(
            "example: cryptoflow simulate --seed 7 --rate 1000 --max-trades 5000 "
            "--record /tmp/trades.jsonl --drop-every 10 --skip-ids 5 --malformed-every 500 "
            "--kline-fault-every 3"
        ),
    )
    d = SimulatorOptions()
    g = p.add_argument_group("trades")
    g.add_argument("--host", help="address to bind (default: CRYPTOFLOW_SIM_HOST)")
    g.add_argument(
        "--port", type=int, help="port to bind, 0 = any free (default: CRYPTOFLOW_SIM_PORT)"
    )
    g.add_argument("--symbols", help="comma-separated symbols (default: CRYPTOFLOW_SYMBOLS)")
    g.add_argument(
        "--seed", type=int, help="seed of prices, sizes and timing (default: random, logged)"
    )
    g.add_argument(
        "--rate",
        type=float,
        default=d.rate,
        help=f"mean trades per second over all symbols, bursty (default {d.rate:g}, "
        "live-like; tens of thousands for benchmarks)",
    )
    g.add_argument(
        "--max-trades",
        type=int,
        help="stop generating after N trades PER SYMBOL; the server keeps serving",
    )
    g.add_argument(
        "--record",
        type=Path,
        help="append every generated trade (streamed or skipped) to PATH as JSON lines, and "
        "aggTrades, closed klines (true values), kline faults and book tickers to "
        "PATH's siblings <stem>.aggTrade<suffix>, .kline_1m, .kline_faults, .bookTicker",
    )
    g.add_argument(
        "--wait-for-client",
        action="store_true",
        help="start trading when the first WebSocket client connects (tests: every trade of "
        "the record can reach a client)",
    )
    g.add_argument(
        "--retention",
        type=int,
        default=d.retention,
        help=f"trades per symbol kept for REST historicalTrades (default {d.retention})",
    )
    g = p.add_argument_group("protocol limits (Binance's values by default)")
    g.add_argument(
        "--ping-interval",
        type=float,
        default=d.ping_interval,
        help=f"seconds between server pings (default {d.ping_interval:g})",
    )
    g.add_argument(
        "--pong-timeout",
        type=float,
        default=d.pong_timeout,
        help=f"disconnect a client whose pong is this late, seconds (default {d.pong_timeout:g})",
    )
    g.add_argument(
        "--max-lifetime",
        type=float,
        default=d.max_lifetime,
        help=f"close connections after this many seconds (default {d.max_lifetime:g})",
    )
    g.add_argument(
        "--message-limit",
        type=int,
        default=d.message_limit,
        help=f"disconnect a client sending more messages per second (default {d.message_limit})",
    )
    g.add_argument(
        "--weight-limit",
        type=int,
        default=d.weight_limit,
        help=f"REST request weight per minute per IP before HTTP 429 (default {d.weight_limit})",
    )
    g = p.add_argument_group("fault injection")
    g.add_argument(
        "--drop-every",
        type=float,
        metavar="SECONDS",
        help="abort every client connection this often (no close frame)",
    )
    g.add_argument(
        "--skip-ids",
        type=int,
        default=0,
        metavar="N",
        help="hold back N consecutive records per gap from each stream (trades, aggTrades, "
        "closed klines, book tickers); they stay in REST and the record, so clients must "
        "backfill",
    )
    g.add_argument(
        "--skip-every",
        type=int,
        default=d.skip_every,
        metavar="RECORDS",
        help=f"streamed records of a symbol and stream kind between two gaps "
        f"(default {d.skip_every})",
    )
    g.add_argument(
        "--malformed-every",
        type=int,
        default=0,
        metavar="N",
        help="after every N streamed records of each stream kind send a malformed frame on "
        "that stream (invalid JSON, not a record, missing fields, in turn)",
    )
    g.add_argument(
        "--kline-fault-every",
        type=int,
        default=0,
        metavar="N",
        help="alter exactly one field of every Nth closed kline streamed (o h l c v q n V Q f L "
        "in turn; REST klines and the record keep the true values, the record's "
        "kline_faults file says what was altered)",
    )
    g.add_argument(
        "--pong-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="handle client frames (pings included) this late, so pongs arrive late",
    )
    g.add_argument(
        "--shutdown-every",
        type=float,
        metavar="SECONDS",
        help="send serverShutdown to every client this often",
    )
    g.add_argument(
        "--shutdown-grace",
        type=float,
        default=d.shutdown_grace,
        metavar="SECONDS",
        help=f"close connections this long after serverShutdown (default {d.shutdown_grace:g})",
    )
    p.add_argument(
        "--status-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="log a status line this often (default 5)",
    )
    p.set_defaults(handler=run)


def options_from_args(args: argparse.Namespace) -> SimulatorOptions:
    symbols = (
        tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
        if args.symbols
        else None
    )
    return SimulatorOptions(
        host=args.host,
        port=args.port,
        symbols=symbols,
        seed=args.seed,
        rate=args.rate,
        max_trades=args.max_trades,
        record=args.record,
        retention=args.retention,
        wait_for_client=args.wait_for_client,
        ping_interval=args.ping_interval,
        pong_timeout=args.pong_timeout,
        max_lifetime=args.max_lifetime,
        message_limit=args.message_limit,
        weight_limit=args.weight_limit,
        drop_every=args.drop_every,
        skip_ids=args.skip_ids,
        skip_every=args.skip_every,
        malformed_every=args.malformed_every,
        kline_fault_every=args.kline_fault_every,
        pong_delay=args.pong_delay,
        shutdown_every=args.shutdown_every,
        shutdown_grace=args.shutdown_grace,
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    options = options_from_args(args).resolve(settings)
    asyncio.run(_serve(settings, options, args.status_every))
    return 0


async def _serve(settings: Settings, options: SimulatorOptions, status_every: float) -> None:
    from ingestion.simulator.server import Simulator

    sim = Simulator(settings, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sim.start()
    except OSError as e:
        from cryptoflow.core.errors import ServiceError

        raise ServiceError(
            f"simulator cannot listen on {options.host}:{options.port}: {e.strerror}; "
            "pick another --port or stop what uses it"
        ) from e
    try:
        last_frames, last_trades, last_t = 0, 0, loop.time()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), status_every)
            s, now = sim.stats(), loop.time()
            dt = max(now - last_t, 1e-9)
            log.info(
                "status trades=%d trades/s=%.0f frames/s=%.0f skipped=%d malformed=%d "
                "connections=%d last_ids=%s",
                s["trades_generated"], (s["trades_generated"] - last_trades) / dt,
                (s["frames_sent"] - last_frames) / dt, s["trades_skipped"],
                s["malformed_sent"], s["connections_open"],
                ",".join(f"{k}:{v}" for k, v in s["last_trade_id"].items()),
            )  # fmt: skip
            last_frames, last_trades, last_t = s["frames_sent"], s["trades_generated"], now
    finally:
        await sim.stop()
