"""``cryptoflow ingest``: exchange trade frames (live, simulator or CSV replay) into Kafka."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from cryptoflow.core.config import SOURCES, Settings
from cryptoflow.core.errors import ConfigError
from cryptoflow.core.signals import SignalStop


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="stream exchange frames from Binance, the simulator or CSV files into Kafka",
        description=(
            "Read the combined streams of CRYPTOFLOW_STREAMS (trade, aggTrade, kline_1m, "
            "bookTicker) of CRYPTOFLOW_SYMBOLS (from Binance, or from the simulator started "
            "with `cryptoflow simulate`), or replay Binance public-data trade files, and "
            "produce every frame unchanged to the topic of its stream kind, "
            "<CRYPTOFLOW_KAFKA_TOPIC_PREFIX>.<kind>.raw (key = symbol, timestamp = receive "
            "time). Reconnects with backoff, fills gaps in trade ids, aggregate ids and closed "
            "klines from REST (recording what cannot be filled, and counting book ticker "
            "update-id gaps, in <prefix>.gaps), resumes from the last id of each kind in Kafka, "
            "and prints a status line every CRYPTOFLOW_STATUS_INTERVAL_S seconds. Ctrl-C stops "
            "cleanly after flushing the producer."
        ),
    )
    p.add_argument(
        "--source",
        choices=SOURCES,
        help="binance (live exchange), sim (local simulator) or csv (replay files); "
        "default CRYPTOFLOW_SOURCE",
    )
    p.add_argument(
        "--csv",
        nargs="+",
        type=Path,
        default=[],
        metavar="PATH",
        help="with --source csv: SYMBOL-trades-YYYY-MM-DD.zip or .csv files, replayed in order",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="with --source csv: replay at original pace times this factor (e.g. 10); "
        "default as fast as possible",
    )
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from ingestion.runner import run_ingestion  # keeps `cryptoflow --help` fast

    if args.source:
        settings = settings.replace(source=args.source)
    if settings.source != "csv" and (args.csv or args.speed is not None):
        raise ConfigError("--csv and --speed only apply to --source csv")
    stop = threading.Event()
    SignalStop(stop).install()  # SIGINT, SIGTERM, SIGHUP; not stop.set() in the handler
    stats = run_ingestion(settings, stop_event=stop, csv_paths=args.csv, speed=args.speed)
    return 1 if stats.undelivered else 0  # 1: Kafka did not take everything before the stop
