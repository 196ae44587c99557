"""``cryptoflow dashboard``: the built-in live page over the serving tables."""

from __future__ import annotations

import argparse
import logging

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ConfigError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="serve the live page (prices, volumes, latencies, pipeline health) on localhost",
        description=(
            "Serve a page with charts of the PostgreSQL serving tables that update while the "
            "pipeline runs: price and VWAP, volume, buy vs sell volume, trade intensity, the "
            "latency chain, pipeline health, data quality and quarantine counts. It reads with "
            "the read-only login (the embedded analyst role, or CRYPTOFLOW_POSTGRES_READER_DSN) "
            "and fetches nothing from the internet. Stop it with Ctrl-C."
        ),
    )
    p.add_argument(
        "--host", help="interface to bind (default CRYPTOFLOW_DASHBOARD_HOST, 127.0.0.1)"
    )
    p.add_argument("--port", type=int, help="port (default CRYPTOFLOW_DASHBOARD_PORT, 8050)")
    p.add_argument(
        "--minutes",
        type=int,
        help="minutes of history the charts show (default CRYPTOFLOW_DASHBOARD_MINUTES, 15)",
    )
    p.add_argument(
        "--refresh",
        type=int,
        metavar="SECONDS",
        help="seconds between page updates (default CRYPTOFLOW_DASHBOARD_REFRESH_SECONDS, 2)",
    )
    p.set_defaults(handler=run)


def _checked(args: argparse.Namespace, s: Settings) -> tuple[str, int, int, int]:
    host = args.host or s.dashboard_host
    port = s.dashboard_port if args.port is None else args.port
    minutes = s.dashboard_minutes if args.minutes is None else args.minutes
    refresh = s.dashboard_refresh_seconds if args.refresh is None else args.refresh
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected 0-65535 (0 picks a free port)")
    if minutes < 1:
        raise ConfigError(f"--minutes {minutes}: show at least 1 minute of history")
    if refresh < 1:
        raise ConfigError(f"--refresh {refresh}: refresh at most once a second")
    return host, port, minutes, refresh


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cryptoflow.core.services.postgres import reader_dsn
    from cryptoflow.dashboard.data import Source, Window
    from cryptoflow.dashboard.server import DashboardServer

    host, port, minutes, refresh = _checked(args, settings)
    source = Source(reader_dsn(settings), Window(minutes, settings.window_seconds))
    source.snapshot()  # fail now, with the connection error, rather than on the first request
    try:
        server = DashboardServer((host, port), source, refresh)
    except OSError as e:
        raise ConfigError(
            f"cannot serve on {host}:{port} ({e.strerror}): choose another --port"
        ) from e
    print(f"dashboard: serving {server.url} (Ctrl-C stops)", flush=True)
    log.info("dashboard started url=%s minutes=%d refresh_s=%d", server.url, minutes, refresh)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        source.close()
    return 0
