"""``cryptoflow dq``: the recent validation runs stored in PostgreSQL dq_results."""

from __future__ import annotations

import argparse

from cryptoflow.core.config import Settings
from expectations.tables import SUITE_OF_TABLE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dq",
        help="show recent data-quality validation runs (dq_results)",
        description=(
            "Show the newest validation runs recorded by `cryptoflow validate` (and by `up` "
            "every CRYPTOFLOW_DQ_INTERVAL_MINUTES): when, which table (each stream kind's "
            "silver table, gold) with its suite and Delta version, success, expectations "
            "evaluated and failed, and the names of the failed ones."
        ),
    )
    p.add_argument("--limit", type=int, default=20, metavar="N", help="newest N runs (20)")
    p.add_argument("--table", choices=tuple(SUITE_OF_TABLE), help="only runs of this table")
    p.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )
    p.set_defaults(handler=run)


COLUMNS = (
    "started_at", "table", "suite", "version", "result", "rows", "evaluated", "failed",
    "failed_rules", "ms",
)  # fmt: skip


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cryptoflow.core.services.postgres import reader_dsn
    from expectations.history import recent_runs
    from pipelines.ops.render import render

    runs = recent_runs(reader_dsn(settings), args.limit, args.table)
    rows = [
        (
            r.started_at.replace(microsecond=0),
            r.table,
            r.suite,
            r.delta_version,
            "passed" if r.success else "FAILED",
            r.rows,
            r.evaluated,
            r.failed,
            ",".join(r.failed_rules),
            r.duration_ms,
        )
        for r in runs
    ]
    if not rows and args.format == "table":
        print("no validation runs yet: run `cryptoflow validate`")
        return 0
    print(render(COLUMNS, rows, args.format))
    return 0
