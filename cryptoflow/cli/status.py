"""``cryptoflow status``: a live terminal view of services, checkpoints and batches."""

from __future__ import annotations

import argparse
import sys
import time

from cryptoflow.core.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="live view: services, checkpoints, recent micro-batches, lags, latencies",
        description=(
            "A live terminal view of the pipeline: health of Kafka and PostgreSQL, each "
            "job's checkpoint (last committed batch, source position), and the newest "
            "micro-batches of every job from PostgreSQL pipeline_batches (rows in/out, "
            "quarantined, late, duration, latency p50/p99, Kafka lag). Refreshes every "
            "CRYPTOFLOW_STATUS_REFRESH_SECONDS until Ctrl-C."
        ),
    )
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument(
        "--interval", type=float, metavar="S", help="seconds between refreshes (setting)"
    )
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.ops.status import snapshot

    if args.once:
        print(snapshot(settings))
        return 0
    interval = args.interval or settings.status_refresh_seconds
    while True:
        text = snapshot(settings)
        sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
        sys.stdout.flush()
        time.sleep(interval)
