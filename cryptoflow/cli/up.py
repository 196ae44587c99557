"""``cryptoflow up``: the main job — services, ingestion and the pipeline's streaming query."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from cryptoflow.core.config import SOURCES, Settings
from cryptoflow.core.errors import ConfigError
from cryptoflow.supervisor import UpOptions, run_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "up",
        help="run the whole pipeline: services, ingestion and the streaming query (the main job)",
        description=(
            "Start the embedded services (unless external ones are configured), apply the "
            "schema, start ingestion from the chosen source (and the simulator with --source "
            "sim) as child processes, and run the pipeline's streaming query, whose "
            "micro-batches serve trades and metrics to PostgreSQL in one transaction and keep "
            "the bronze, silver and gold Delta tables. On a terminal a live table shows "
            "every part (state, rows/s, batch, lag, latency, rows in PostgreSQL, gaps); "
            "otherwise a status line per part every few seconds. Whatever fails is restarted "
            "with backoff; Spark's and the libraries' logs go to <data_dir>/logs. Ctrl-C, "
            "SIGTERM (kill, docker stop, systemd) and SIGHUP (a closed terminal) stop it "
            "cleanly and alike, exit code 0: the simulator, ingestion (it flushes to Kafka), "
            "the query at the end of its micro-batch, Spark, then the embedded Kafka and "
            "PostgreSQL that this run started. Embedded services that were already running "
            "(`cryptoflow services up`, `cryptoflow setup`) keep running, and it says so "
            "(`cryptoflow services down` stops them). Running it again resumes from the "
            "checkpoints. Against live Binance that cannot be reached it says so, with what "
            "to do, and keeps retrying: it never switches to simulated data by itself."
        ),
        epilog="example: cryptoflow up --source sim --sim-rate 100",
    )
    p.add_argument(
        "--source",
        choices=SOURCES,
        help="where trades come from (default: CRYPTOFLOW_SOURCE, itself binance)",
    )
    p.add_argument(
        "--csv", type=Path, action="append", default=[], metavar="PATH",
        help="with --source csv: a Binance public-data trades file (.zip or .csv); repeatable",
    )  # fmt: skip
    p.add_argument("--speed", type=float, help="with --source csv: replay speed factor")
    p.add_argument(
        "--no-pipeline", action="store_true",
        help="do not start the streaming query (services and ingestion only)",
    )  # fmt: skip
    p.add_argument(
        "--no-ingest", action="store_true",
        help="do not start ingestion (e.g. another process feeds the topic)",
    )  # fmt: skip
    p.add_argument(
        "--status-every", type=float, default=5.0,
        help="seconds between plain status lines (when stdout is not a terminal, or --plain)",
    )  # fmt: skip
    p.add_argument(
        "--plain", action="store_true",
        help="plain status lines even on a terminal (default there: a live table)",
    )  # fmt: skip
    sim = p.add_argument_group("simulator (with --source sim; see `cryptoflow simulate --help`)")
    sim.add_argument("--sim-rate", type=float, help="mean trades per second over all symbols")
    sim.add_argument("--sim-seed", type=int, help="seed of prices, sizes and timing")
    sim.add_argument("--sim-max-trades", type=int, help="stop generating after N per symbol")
    sim.add_argument("--sim-record", type=Path, help="JSON lines of every generated trade")
    sim.add_argument("--sim-drop-every", type=float, help="drop connections every S seconds")
    sim.add_argument("--sim-skip-ids", type=int, help="skip N ids on the stream now and then")
    sim.add_argument("--sim-skip-every", type=int, help="streamed trades between two skips")
    sim.add_argument("--sim-malformed-every", type=int, help="a malformed frame every N trades")
    sim.add_argument(
        "--sim-kline-fault-every", type=int, metavar="N",
        help="alter one field of every Nth closed kline sent (reconciliation then names it)",
    )  # fmt: skip
    sim.add_argument(
        "--sim-wait-for-client", action="store_true",
        help="the simulator starts trading when ingestion connects (exact test runs)",
    )  # fmt: skip
    p.set_defaults(handler=run)


_SIM_FLAGS = {
    "sim_rate": "--rate", "sim_seed": "--seed", "sim_max_trades": "--max-trades",
    "sim_record": "--record", "sim_drop_every": "--drop-every", "sim_skip_ids": "--skip-ids",
    "sim_skip_every": "--skip-every",
    "sim_malformed_every": "--malformed-every", "sim_kline_fault_every": "--kline-fault-every",
}  # fmt: skip


def options_from_args(settings: Settings, args: argparse.Namespace) -> UpOptions:
    sim_args: list[str] = []
    if args.sim_wait_for_client:
        sim_args.append("--wait-for-client")
    for attr, flag in _SIM_FLAGS.items():
        value = getattr(args, attr)
        if value is not None:
            sim_args += [flag, str(value)]
    return UpOptions(
        source=args.source or settings.source,
        pipeline=not args.no_pipeline,
        ingest=not args.no_ingest,
        csv_paths=args.csv,
        speed=args.speed,
        simulator_args=sim_args,
        status_every_s=args.status_every,
        live=False if args.plain else None,
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    options = options_from_args(settings, args)
    if options.source == "csv" and options.ingest and not options.csv_paths:
        raise ConfigError("--source csv needs at least one --csv PATH (a Binance trades file)")
    stop = threading.Event()
    run_pipeline(settings, options, stop, progress=lambda line: print(line, flush=True))
    return 0
