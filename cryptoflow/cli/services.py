"""``cryptoflow services up|down|status``: the embedded Kafka broker and PostgreSQL cluster."""

from __future__ import annotations

import argparse
import json

from cryptoflow.core import services
from cryptoflow.core.config import Settings
from cryptoflow.core.jars import KAFKA_JARS, ensure_jars
from cryptoflow.core.tools import ensure_weed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "services",
        help="start, stop or check the embedded Kafka broker and PostgreSQL",
        description=(
            "Manage the embedded services under CRYPTOFLOW_DATA_DIR: a single-node Apache "
            "Kafka broker in KRaft mode and a private PostgreSQL cluster, and with an s3a:// "
            "lake or checkpoint root but no CRYPTOFLOW_S3_ENDPOINT a SeaweedFS S3 server "
            "(docs/object-storage.md). Services configured "
            "as external (CRYPTOFLOW_KAFKA_BOOTSTRAP_SERVERS, CRYPTOFLOW_POSTGRES_DSN) are "
            "only checked, never started or stopped. Data survives `down` then `up`."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start the embedded services (no-op when running)")
    up.set_defaults(handler=run_up)
    down = actions.add_parser("down", help="stop the embedded services, keeping their data")
    down.set_defaults(handler=run_down)
    st = actions.add_parser("status", help="health of each service; exit 1 if any is down")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(handler=run_status)


def run_up(settings: Settings, args: argparse.Namespace) -> int:
    if settings.embedded_kafka:
        ensure_jars(settings.jar_cache, KAFKA_JARS, settings.maven_repo)
    if settings.embedded_s3:  # built once per machine (minutes)
        ensure_weed(settings.tool_cache)
    services.up(settings)
    return 0


def run_down(settings: Settings, args: argparse.Namespace) -> int:
    services.down(settings)
    return 0


def run_status(settings: Settings, args: argparse.Namespace) -> int:
    report = services.status(settings)
    if args.json:
        print(json.dumps([r.as_dict() for r in report], indent=2))
    else:
        for r in report:
            print(f"{r.name:<9} {r.mode:<9} {'healthy' if r.healthy else 'DOWN':<8} {r.detail}")
    return 0 if all(r.healthy for r in report) else 1
