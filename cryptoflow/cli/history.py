"""``cryptoflow history``: the commits of a Delta table (version, time, operation, rows)."""

from __future__ import annotations

import argparse

from cryptoflow.core.config import TABLES, Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "history",
        help="list the Delta commits of bronze, silver, quarantine or gold",
        description=(
            "List a Delta table's commits, newest first: version, commit time, operation, "
            "rows written (numOutputRows, or inserted+updated for a MERGE) and the other "
            "numbers of the commit. Any version listed can be read with "
            "`cryptoflow query ... --as-of VERSION`."
        ),
    )
    p.add_argument("table", choices=TABLES, help="which table")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="newest N commits (20)")
    p.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cryptoflow.core.spark import get_spark
    from pipelines.ops.render import render
    from pipelines.ops.tables import history

    spark = get_spark(settings, "cryptoflow-history")
    entries = history(spark, settings, args.table, args.limit)
    rows = [(e.version, e.timestamp, e.operation, e.rows, e.detail) for e in entries]
    print(render(("version", "timestamp", "operation", "rows", "detail"), rows, args.format))
    return 0
