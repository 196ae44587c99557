"""``cryptoflow validate``: a Great Expectations checkpoint over each stream kind's silver table
and/or gold."""

from __future__ import annotations

import argparse

from cryptoflow.core.config import Settings
from expectations.tables import SUITE_OF_TABLE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="validate the silver tables and gold with the Great Expectations suites; "
        "build Data Docs",
        description=(
            "Validate Delta tables off the hot path with the suites in expectations/suites/ "
            "(a GE checkpoint): each stream kind's silver table and gold against its suite "
            f"({', '.join(f'{t}: {s}' for t, s in SUITE_OF_TABLE.items())}). Rebuild the "
            "Data Docs (HTML under <data_dir>/gx) and record each run in PostgreSQL dq_results "
            "(see `cryptoflow dq`). Exit status: 0 when every expectation passed, 1 when one "
            "failed."
        ),
    )
    p.add_argument(
        "--table",
        choices=(*SUITE_OF_TABLE, "all"),
        default="all",
        help="which table to validate (default: all = the silver tables of CRYPTOFLOW_STREAMS "
        "that exist, and gold)",
    )
    p.add_argument(
        "--as-of",
        metavar="VERSION|TIMESTAMP",
        help="validate the table as it was at a Delta version (e.g. 12) or an ISO timestamp "
        "(e.g. 2026-11-26T01:00:00Z); default: the latest version",
    )
    p.add_argument("--no-store", action="store_true", help="do not record the run in dq_results")
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cryptoflow.core.spark import get_spark
    from expectations.checkpoint import parse_as_of, run_validation, table_exists
    from expectations.tables import validation_tables

    as_of = parse_as_of(args.as_of)  # a bad value fails before Spark starts
    spark = get_spark(settings, "cryptoflow-validate")
    tables = [args.table]
    if args.table == "all":
        tables = validation_tables(settings, lambda t: table_exists(spark, settings, t))
        for kind in settings.stream_kinds:
            if kind.entity.lake not in tables:
                print(f"{kind.entity.lake}: skipped, the table does not exist yet")
    ok = True
    docs = None
    for table in tables:
        r = run_validation(spark, settings, table, as_of, store=not args.no_store)
        ok = ok and r.success
        docs = r.docs_index or docs
        print(
            f"{table}: suite={r.suite} version={r.delta_version} rows={r.rows} "
            f"{'PASSED' if r.success else 'FAILED'} expectations={r.evaluated} "
            f"failed={len(r.failed)} in {r.duration_ms} ms"
        )
        for o in r.failed:
            print(f"  failed {o.rule} ({o.action}): {o.unexpected} of {o.evaluated} rows")
    if docs:
        print(f"Data Docs: {docs}")
    return 0 if ok else 1
