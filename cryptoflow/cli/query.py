"""``cryptoflow query``: SQL over the Delta tables by name, now or as of a version/time."""

from __future__ import annotations

import argparse

from cryptoflow.core.config import TABLES, Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="run Spark SQL over the Delta tables (time travel with --as-of)",
        description=(
            f"Run one Spark SQL statement over the Delta tables, named {', '.join(TABLES)} "
            "(temporary views over the lake). With --as-of every table the query names is "
            "read at that version or timestamp (Delta time travel)."
        ),
        epilog=(
            "examples:\n"
            '  cryptoflow query "SELECT symbol, count(*) FROM silver GROUP BY symbol"\n'
            '  cryptoflow query "SELECT count(*) FROM gold" --as-of 3\n'
            "  cryptoflow query \"SELECT * FROM quarantine\" --as-of '2026-01-01 12:00:00' "
            "--format json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sql", help="the SQL statement, in quotes")
    p.add_argument(
        "--as-of",
        metavar="VERSION|TIMESTAMP",
        help="read the tables at this Delta version (integer) or timestamp (UTC, ISO)",
    )
    p.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )
    p.add_argument(
        "--max-rows", type=int, default=1000, metavar="N", help="print at most N rows (1000)"
    )
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    import sys

    from cryptoflow.core.spark import get_spark
    from pipelines.ops.render import render
    from pipelines.ops.tables import parse_as_of, run_query

    spark = get_spark(settings, "cryptoflow-query")
    df = run_query(spark, settings, args.sql, parse_as_of(args.as_of))
    rows = df.take(args.max_rows + 1)
    print(render(df.columns, [tuple(r) for r in rows[: args.max_rows]], args.format))
    if len(rows) > args.max_rows:
        print(f"(first {args.max_rows} rows shown; raise --max-rows)", file=sys.stderr)
    return 0
