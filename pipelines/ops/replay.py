"""Rebuild silver from bronze, or gold from silver, with the pipeline's own code.

How a rebuild swaps in (docs/operations.md): in place, with the pipeline's query stopped.
1. refuse while the query runs (its checkpoint owner file names a live process);
2. silver: move the last rebuild's checkpoint aside to ``<checkpoint>.replaced-<UTC time>``,
   clear what will be recomputed with a Delta DELETE/MERGE (the previous rows stay reachable
   by time travel and ``RESTORE``): everything for a full rebuild, for a rebuild from bronze
   version N the rows that came from bronze commits >= N; then run the pipeline's batch
   function (``PipelineBatch``, without its bronze write) over bronze as a Delta stream
   from ``startingVersion`` N, with an availableNow trigger, and make PostgreSQL's
   raw_trades and quarantine equal to the rebuilt tables for the symbols (topics) involved:
   upsert every row, delete rows that are no longer there, in one transaction (admin login);
3. gold (also after a silver rebuild): recompute the exact window sums of the symbols
   involved from silver (``window_sums``), and replace them in PostgreSQL (``metric_sums``,
   ``metrics``) and in Delta gold. The live query goes on folding from there.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from delta.tables import DeltaTable
from psycopg2 import sql
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.errors import CryptoflowError
from cryptoflow.core.services.postgres import admin_dsn
from cryptoflow.core.services.process import pid_alive
from pipelines.batch import PipelineBatch
from pipelines.bronze.source import bronze_stream
from pipelines.gold.rebuild import rebuild_gold
from pipelines.job import kind_plans, run_batches, validated_records
from pipelines.ledger import query_id_reader
from pipelines.ops.checkpoints import ensure_checkpoint_owner, job_io, read_owner
from pipelines.ops.files import Files
from pipelines.ops.tables import history, version_range
from pipelines.serving import UpsertSpec, copy_upsert
from pipelines.silver.tables import QUARANTINE, upsert_spec

LIVE_QUERY = "trades"  # pipelines.job.QUERY (imported lazily: ops is below the job)
REBUILD = "replay-silver"

log = logging.getLogger(__name__)
SOURCE_OF = {"silver": "bronze", "gold": "silver"}


class ReplayError(CryptoflowError):
    """A replay that cannot start safely (job running, bad version, missing table)."""


@dataclass(frozen=True)
class ReplayResult:
    stage: str
    from_version: int | None  # source version the rebuild started at (None: everything)
    previous_version: int  # target version before the rebuild (RESTORE to undo)
    rows_before: int
    rows_after: int
    batches: int
    checkpoint_moved_to: str | None
    pg_upserted: int
    pg_deleted: int
    seconds: float


def resolve_start(
    spark: SparkSession,
    settings: Settings,
    source: str,
    from_version: int | None,
    from_timestamp: str | None,
) -> int | None:
    """The source version to replay from (None: a full rebuild)."""
    if from_version is not None and from_timestamp is not None:
        raise ReplayError("give --from-version or --from-timestamp, not both")
    if from_version is not None:
        lo, hi = version_range(spark, settings, source)
        if not lo <= from_version <= hi:
            raise ReplayError(
                f"version {from_version} is outside {source}'s history (versions {lo}..{hi}): "
                f"see `cryptoflow history {source}`"
            )
        return from_version
    if from_timestamp is not None:
        when = datetime.fromisoformat(from_timestamp)
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        later = [e.version for e in history(spark, settings, source) if _utc(e.timestamp) >= when]
        if not later:
            raise ReplayError(
                f"no commit of {source} at or after {from_timestamp}: see "
                f"`cryptoflow history {source}`"
            )
        return min(later)
    return None


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC) if ts.tzinfo is None else ts  # naive = local, as PySpark returns


def ensure_stopped(spark: SparkSession, settings: Settings) -> None:
    """Refuse while the pipeline's query runs here or in another live process on this host."""
    if any(q.name == LIVE_QUERY for q in spark.streams.active):
        raise ReplayError(f"the {LIVE_QUERY} query runs in this process: stop it, then replay")
    owner = read_owner(settings.checkpoint_path(LIVE_QUERY), Files(settings))
    if (
        owner is not None
        and owner.pid != os.getpid()
        and owner.host == socket.gethostname()
        and pid_alive(owner.pid)
    ):
        raise ReplayError(
            f"the pipeline is running (pid {owner.pid}, started {owner.started_at}): stop it "
            "(Ctrl-C the `cryptoflow up` or `cryptoflow run` that runs it), then replay; "
            "--force skips this check"
        )


def move_checkpoint_aside(settings: Settings, stage: str) -> str | None:
    """Move the rebuild's checkpoint (local or on an object store) aside, so the next
    rebuild starts from scratch; returns where it went, None when there was none."""
    checkpoint = settings.checkpoint_path(stage)
    files = Files(settings)
    if not files.exists(checkpoint):
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    dest = f"{checkpoint.rstrip('/')}.replaced-{stamp}"
    files.rename(checkpoint, dest)
    log.info("replay checkpoint moved from=%s to=%s", checkpoint, dest)
    return dest


def _delta(spark: SparkSession, settings: Settings, name: str) -> DeltaTable:
    return DeltaTable.forPath(spark, settings.table_path(name))


def _read(spark: SparkSession, settings: Settings, name: str, version: int | None = None):
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(settings.table_path(name))


def silver_tables(settings: Settings) -> list[tuple[str, str | None]]:
    """(Delta table, topic of its records) of what a silver rebuild recomputes: each chosen
    kind's silver table, then quarantine (any topic)."""
    kinds = [(k.entity.lake, settings.topic(k)) for k in settings.stream_kinds]
    return [*kinds, ("quarantine", None)]


def clear_silver(spark: SparkSession, settings: Settings, start: int | None) -> None:
    """Remove the silver and quarantine rows a silver rebuild recomputes (module doc)."""
    if start is None or start == 0:
        for table, _ in silver_tables(settings):
            _delta(spark, settings, table).delete()
        return
    keys = ["topic", "partition", "offset"]
    added = (
        _read(spark, settings, "bronze")
        .select(*keys)
        .join(_read(spark, settings, "bronze", start - 1).select(*keys), keys, "left_anti")
    )
    for table, topic in silver_tables(settings):
        records = added if topic is None else added.where(F.col("topic") == topic)
        same = "t.kafka_partition = s.partition AND t.kafka_offset = s.offset"
        if topic is None:
            same = "t.topic = s.topic AND " + same
        _delta(spark, settings, table).alias("t").merge(
            records.alias("s"), same
        ).whenMatchedDelete().execute()


def rebuild_silver(spark: SparkSession, settings: Settings, start: int | None) -> int:
    """Run the pipeline's batch function over bronze (from version ``start``) until it has
    processed bronze as it is now; returns the batches run."""

    ensure_checkpoint_owner(settings, REBUILD, *job_io(settings, REBUILD))
    checkpoint = settings.checkpoint_path(REBUILD)
    reader = spark.readStream.format("delta")
    if start is not None:
        reader = reader.option("startingVersion", start)
    plans = kind_plans(settings)
    source = validated_records(bronze_stream(reader, settings), settings, plans)
    handler = PipelineBatch(
        settings, plans, query_id_reader(checkpoint), REBUILD, write_bronze=False
    )
    query = run_batches(source, handler, checkpoint, REBUILD, True, settings.trigger_interval_ms)
    query.awaitTermination()
    if query.exception() is not None:
        raise ReplayError(f"silver replay failed: {query.exception()}")
    last = query.lastProgress
    return int(last["batchId"]) + 1 if last else 0


# ----- PostgreSQL


def _silver_specs(settings: Settings) -> list[tuple[UpsertSpec, str, str]]:
    """(spec with update=True, Delta table, scope column) of the tables silver serves."""
    kinds = [
        (replace(upsert_spec(k), update=True), k.entity.lake, "symbol")
        for k in settings.stream_kinds
    ]
    return [*kinds, (replace(QUARANTINE, update=True), "quarantine", "topic")]


def _scope(df: DataFrame, column: str) -> set[str]:
    return {r[0] for r in df.select(column).distinct().collect() if r[0] is not None}


def sync_postgres(
    spark: SparkSession, settings: Settings, versions_before: dict[str, int]
) -> tuple[int, int]:
    """Make raw_trades and quarantine equal the rebuilt silver and quarantine rows for the
    symbols/topics involved before (``versions_before``: table -> version) or after the
    rebuild. Returns (rows upserted, rows deleted)."""
    upserted = deleted = 0
    conn = connect(admin_dsn(settings))  # DELETE is an operator's right, not the pipeline's
    try:
        with conn, conn.cursor() as cur:
            for spec, table, scope_col in _silver_specs(settings):
                now = _read(spark, settings, table)
                before = _read(spark, settings, table, versions_before[table])
                scope = sorted(_scope(now, scope_col) | _scope(before, scope_col))
                if not scope:
                    continue
                rows = now.where(F.col(scope_col).isin(scope)).select(*spec.columns)
                upserted += copy_upsert(cur, spec, (tuple(r) for r in rows.toLocalIterator()))
                # copy_upsert leaves this transaction's rows in its staging table.
                same_key = sql.SQL(" AND ").join(
                    sql.SQL("s.{0} = t.{0}").format(sql.Identifier(k)) for k in spec.key
                )
                cur.execute(
                    sql.SQL(
                        "DELETE FROM {target} t WHERE t.{scope} = ANY(%s) "
                        "AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE {same_key})"
                    ).format(
                        target=sql.Identifier(spec.table),
                        scope=sql.Identifier(scope_col),
                        stage=sql.Identifier(f"_stage_{spec.table}"),
                        same_key=same_key,
                    ),
                    (scope,),
                )
                deleted += cur.rowcount
    finally:
        conn.close()
    return upserted, deleted


def replay(
    spark: SparkSession,
    settings: Settings,
    stage: str,
    from_version: int | None = None,
    from_timestamp: str | None = None,
    force: bool = False,
) -> ReplayResult:
    """Rebuild ``stage`` (silver or gold) from its source; see the module doc."""

    if stage not in SOURCE_OF:
        raise ReplayError(f"cannot replay {stage!r}: replay rebuilds silver or gold")
    started = time.monotonic()
    source = SOURCE_OF[stage]
    for name in (source, stage):
        if not DeltaTable.isDeltaTable(spark, settings.table_path(name)):
            raise ReplayError(f"table {name} does not exist at {settings.table_path(name)}")
    start = resolve_start(spark, settings, source, from_version, from_timestamp)
    if not force:
        ensure_stopped(spark, settings)
    targets = [t for t, _ in silver_tables(settings)] if stage == "silver" else ["gold"]
    versions_before = {t: version_range(spark, settings, t)[1] for t in targets}
    previous = versions_before[stage]
    rows_before = _read(spark, settings, stage).count()
    moved, batches, upserted, deleted = None, 0, 0, 0
    if stage == "silver":
        moved = move_checkpoint_aside(settings, REBUILD)
        clear_silver(spark, settings, start)
        batches = rebuild_silver(spark, settings, start)
        upserted, deleted = sync_postgres(spark, settings, versions_before)
        symbols = None  # silver changed: every window may have
    else:
        symbols = None if start is None else _added_symbols(spark, settings, start)
    rebuild_gold(spark, settings, symbols)
    result = ReplayResult(
        stage,
        start,
        previous,
        rows_before,
        _read(spark, settings, stage).count(),
        batches,
        moved,
        upserted,
        deleted,
        time.monotonic() - started,
    )
    log.info(
        "replay stage=%s from_version=%s previous_version=%d rows_before=%d rows_after=%d "
        "batches=%d pg_upserted=%d pg_deleted=%d duration_s=%.1f",
        stage,
        "all" if start is None else start,
        previous,
        result.rows_before,
        result.rows_after,
        batches,
        upserted,
        deleted,
        result.seconds,
    )
    return result


def _added_symbols(spark: SparkSession, settings: Settings, start: int) -> list[str]:
    """The symbols of the silver rows committed at version ``start`` or later."""
    before = _read(spark, settings, "silver", start - 1) if start > 0 else None
    now = _read(spark, settings, "silver").select("symbol", "trade_id")
    added = (
        now
        if before is None
        else now.join(before.select("symbol", "trade_id"), ["symbol", "trade_id"], "left_anti")
    )
    return sorted(_scope(added, "symbol"))
