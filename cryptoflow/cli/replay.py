"""``cryptoflow replay``: rebuild silver from bronze or gold from silver."""

from __future__ import annotations

import argparse
from datetime import date

from cryptoflow.core.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="rebuild silver from bronze (or gold from silver) and re-mirror to PostgreSQL",
        description=(
            "Rebuild in place with the pipeline's own code. silver: the rows to recompute "
            "are deleted (earlier versions stay reachable by time travel and RESTORE), the "
            "pipeline's batch function runs over bronze (without its bronze write) until it "
            "has caught up, PostgreSQL raw_trades and quarantine are made equal to the "
            "rebuilt tables, and gold is rebuilt too. gold: the window sums are recomputed "
            "from silver and replace metric_sums, metrics and Delta gold. Stop the pipeline "
            "first; its query's checkpoint is left alone and it resumes where it stopped. "
            "Without --from-* everything is rebuilt. serving: refill PostgreSQL's raw_trades "
            "and metrics of the UTC days --day .. --until from silver and metric_sums (e.g. "
            "days CRYPTOFLOW_SERVING_RETENTION_DAYS dropped); rows already there stay; safe "
            "while the pipeline runs."
        ),
    )
    p.add_argument(
        "stage",
        choices=("silver", "gold", "serving"),
        help="the stage to rebuild (serving: refill PostgreSQL days from the lake)",
    )
    p.add_argument(
        "--day",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="serving: the first UTC day to refill",
    )
    p.add_argument(
        "--until",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="serving: the last UTC day to refill (default: --day)",
    )
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--from-version",
        type=int,
        metavar="N",
        help="replay the source's commits from version N on (see `cryptoflow history`)",
    )
    start.add_argument(
        "--from-timestamp",
        metavar="T",
        help="replay the source's commits made at or after T (UTC, ISO 8601)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="skip the check that the stage's job is not running on this host",
    )
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cryptoflow.core.spark import get_spark
    from pipelines.ops.batches import attach_recorder
    from pipelines.ops.replay import replay

    if args.stage == "serving":
        return refill(settings, args)
    spark = get_spark(settings, f"cryptoflow-replay-{args.stage}")
    attach_recorder(spark, settings)
    r = replay(spark, settings, args.stage, args.from_version, args.from_timestamp, args.force)
    origin = "the start" if r.from_version is None else f"version {r.from_version}"
    print(
        f"replayed {r.stage} from {origin}"
        f": {r.rows_before} rows before, {r.rows_after} after, {r.batches} batches, "
        f"PostgreSQL {r.pg_upserted} inserted or changed / {r.pg_deleted} deleted, "
        f"{r.seconds:.1f}s"
    )
    print(
        f"undo: RESTORE to version {r.previous_version} of {r.stage}; old checkpoint: "
        f"{r.checkpoint_moved_to or '(none)'}"
    )
    return 0


def refill(settings: Settings, args: argparse.Namespace) -> int:
    from cryptoflow.core.spark import get_spark
    from pipelines.ops.refill import refill_days

    if args.day is None:
        raise SystemExit("cryptoflow replay serving: --day YYYY-MM-DD is required")
    spark = get_spark(settings, "cryptoflow-replay-serving")
    r = refill_days(spark, settings, args.day, args.until or args.day)
    print(
        f"refilled {r.first}..{r.last}: {r.silver_rows} trades in silver, "
        f"{r.trades_inserted} inserted into raw_trades, {r.windows} metrics windows, "
        f"{r.seconds:.1f}s"
    )
    return 0
