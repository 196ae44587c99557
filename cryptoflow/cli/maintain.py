"""``cryptoflow maintain``: compact small files and vacuum inside the time-travel window."""

from __future__ import annotations

import argparse

from cryptoflow.core.config import TABLES, Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "maintain",
        help="compact small Delta files and vacuum, never below the time-travel window",
        description=(
            "For each Delta table: OPTIMIZE (bin-packing compaction, dataChange=false, so "
            "running streams are unaffected; retried on concurrent-commit conflicts), set "
            "delta.deletedFileRetentionDuration / delta.logRetentionDuration to the window "
            "when they differ, then VACUUM files no version inside the window references. "
            "Safe while the streams run. The window is CRYPTOFLOW_TIME_TRAVEL_RETENTION_HOURS. "
            "Then PostgreSQL: the day partitions of raw_trades and metrics for the next days "
            "are made, and those wholly older than CRYPTOFLOW_SERVING_RETENTION_DAYS are "
            "dropped (0, the default: none; `replay serving --day` refills a day)."
        ),
    )
    p.add_argument(
        "--table",
        action="append",
        choices=TABLES,
        help="a table to maintain (repeatable; default: every table that exists)",
    )
    p.add_argument(
        "--retain-hours",
        type=int,
        metavar="H",
        help="vacuum retention in hours (default and minimum: the time-travel window)",
    )
    p.add_argument(
        "--all-partitions",
        action="store_true",
        help="also compact today's date partition (default: only closed days, which no "
        "running MERGE touches)",
    )
    p.add_argument(
        "--set-properties",
        action="store_true",
        help="set the retention properties even on a table written in the last 2 minutes "
        "(a metadata commit fails a writer's in-flight commit: use with the jobs stopped)",
    )
    p.add_argument(
        "--serving-only",
        action="store_true",
        help="only PostgreSQL's day partitions (no Spark, no Delta table)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing: show file counts, files VACUUM would delete, properties to set",
    )
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cryptoflow.core.spark import get_spark
    from pipelines.ops.maintain import check_retention, maintain, maintain_serving
    from pipelines.ops.render import render

    if args.serving_only:
        return serving(maintain_serving(settings, args.dry_run), settings, args.dry_run)
    check_retention(settings, args.retain_hours)  # refuse before starting Spark
    spark = get_spark(settings, "cryptoflow-maintain")
    reports = maintain(
        spark,
        settings,
        args.table,
        args.retain_hours,
        args.dry_run,
        args.all_partitions,
        args.set_properties,
    )
    rows = [
        (
            r.table,
            r.files_before,
            r.files_after,
            r.files_compacted,
            r.files_vacuumed,
            ", ".join(r.properties_set) or "-",
        )
        for r in reports
    ]
    cols = ("table", "files_before", "files_after", "compacted", "vacuumed", "properties_set")
    if args.dry_run:
        cols = ("table", "files", "files", "-", "would_vacuum", "would_set")
    print(render(cols, rows))
    return serving(maintain_serving(settings, args.dry_run), settings, args.dry_run)


def serving(dropped: list, settings: Settings, dry_run: bool) -> int:
    """Print the serving partitions dropped (``maintain_serving``)."""
    days = settings.serving_retention_days
    if not days:
        print("serving tables: every day kept (CRYPTOFLOW_SERVING_RETENTION_DAYS=0)")
        return 0
    verb = "would drop" if dry_run else "dropped"
    print(f"serving tables: {verb} {len(dropped)} day partitions older than {days} days")
    for p in dropped:
        print(f"  {p.table} {p.day.isoformat()} ~{max(p.rows_estimate, 0)} rows")
    return 0
