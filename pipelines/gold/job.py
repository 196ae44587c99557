"""Gold job: Delta silver stream -> exact windowed metrics -> Delta gold + Postgres ``metrics``.

Each micro-batch of new silver rows only says which (symbol, window) pairs changed. Those
windows are recomputed from the whole silver table (a read pruned by trade_date, symbol and
time range), rewritten in Delta gold in one commit (``replaceWhere`` over the batch's
``Scope``) and upserted into Postgres in one transaction. A late
trade (a gap backfill, a slow partition) therefore corrects its window whenever it arrives,
and a replayed batch recomputes the same values: the job is idempotent and exact.

``settings.watermark_seconds`` decides what counts as late: a row older than (newest trade
time of the earlier batches - watermark) is counted and logged per batch, and its window is
still corrected. See docs/gold.md.
"""

from __future__ import annotations

import logging
import time

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from cryptoflow.config import Settings
from cryptoflow.services.postgres import pipeline_dsn
from pipelines.batch_values import opaque_long
from pipelines.gold.scope import Scope, Window
from pipelines.gold.transform import (
    GOLD_SCHEMA,
    METRIC_COLUMNS,
    finish,
    from_micros,
    window_lengths,
    window_start_us,
    window_sums,
)
from pipelines.log_checkpoints import NO_INLINE_CHECKPOINTS, checkpoint_in_background
from pipelines.ops.batches import attach_recorder, record_batch
from pipelines.ops.checkpoints import ensure_checkpoint_owner, job_io
from pipelines.serving import UpsertSpec, mirror
from pipelines.silver.tables import ensure_tables

log = logging.getLogger(__name__)

METRICS_SPEC = UpsertSpec(
    "metrics", METRIC_COLUMNS, ("symbol", "window_start", "window_end"), update=True
)


def ensure_gold_table(spark: SparkSession, path: str) -> None:
    """Create the gold Delta table (partitioned by window_date) unless it exists."""
    (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(GOLD_SCHEMA)
        .partitionedBy("window_date")
        .property(*NO_INLINE_CHECKPOINTS)
        .execute()
    )


def _end_us(sums: Row) -> int:
    return sums["window_start_us"] + sums["window_seconds"] * 1_000_000


def _phase_ms(started: float, phases: dict[str, float]) -> str:
    """``find=12 recompute=340 ...``: milliseconds spent in each phase of a batch."""
    out, previous = [], started
    for name, at in phases.items():
        out.append(f"{name}={(at - previous) * 1000:.0f}")
        previous = at
    return " ".join(out)


class GoldBatchWriter:
    """The foreachBatch function: recompute touched windows, rewrite them in Delta, upsert
    them into Postgres."""

    def __init__(self, spark: SparkSession, settings: Settings) -> None:
        self.spark = spark
        self.settings = settings
        self.lengths = window_lengths(settings.window_seconds)
        self.silver_path = settings.table_path("silver")
        self.gold_path = settings.table_path("gold")
        self.dsn = pipeline_dsn(settings)
        self.max_seen_us: int | None = None  # newest trade time of earlier batches
        self.resumed = False

    def _resume_max_seen(self) -> int | None:
        """Newest trade time in gold, so the watermark survives a restart."""
        gold = self.spark.read.format("delta").load(self.gold_path)
        return gold.agg(F.max(F.unix_micros("last_trade_time"))).first()[0]

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        if not self.resumed:
            self.max_seen_us, self.resumed = self._resume_max_seen(), True
        watermark_us = (
            None
            if self.max_seen_us is None
            else self.max_seen_us - self.settings.watermark_seconds * 1_000_000
        )
        us = F.unix_micros("trade_time")
        late = F.lit(False)
        if watermark_us is not None:  # kept out of the generated code (pipelines.batch_values)
            late = us < opaque_long(watermark_us, F.col("symbol"))
        starts = [window_start_us(F.col("trade_time"), s).alias(f"w{s}") for s in self.lengths]
        stats = (
            batch.groupBy(F.col("symbol"), *starts)
            .agg(
                F.count(F.lit(1)).alias("rows"),
                F.max(us).alias("max_us"),
                F.sum(F.when(late, 1).otherwise(0)).alias("late"),
            )
            .collect()
        )
        phases = {"find": time.monotonic()}
        if not stats:
            log.info("gold batch=%d rows=0 windows=0", batch_id)
            return
        touched: set[Window] = {(r["symbol"], s, r[f"w{s}"]) for r in stats for s in self.lengths}
        scope = Scope.of(touched)
        silver = self.spark.read.format("delta").load(self.silver_path)
        sums = [
            r
            for r in window_sums(silver.where(scope.silver_filter()), self.lengths).collect()
            if scope.contains(r["symbol"], r["window_start_us"], _end_us(r))
        ]
        found = {(r["symbol"], r["window_seconds"], r["window_start_us"]) for r in sums}
        rows = [finish(r.asDict()) for r in sums]
        phases["recompute"] = time.monotonic()
        if not touched <= found:
            log.warning(
                "gold batch=%d windows_touched=%d not_found_in_silver=%d",
                batch_id,
                len(touched),
                len(touched - found),
            )
        self._rewrite(rows, scope)
        phases["delta"] = time.monotonic()
        changed = mirror(
            self.dsn,
            [(METRICS_SPEC, [tuple(r[c] for c in METRIC_COLUMNS) for r in rows])],
            retry_seconds=self.settings.mirror_retry_seconds,
            what=f"gold batch {batch_id}",
        )
        phases["postgres"] = time.monotonic()
        late_rows = sum(r["late"] for r in stats)
        record_batch(self.settings, "gold", batch_id, late=late_rows, output_rows=len(rows))
        batch_max = max(r["max_us"] for r in stats)
        self.max_seen_us = max(batch_max, self.max_seen_us or batch_max)
        closed = sum(
            1
            for _, seconds, start in touched
            if watermark_us is not None and start + seconds * 1_000_000 <= watermark_us
        )
        log.info(
            "gold batch=%d rows=%d windows_touched=%d windows_written=%d late_rows=%d "
            "closed_windows_corrected=%d watermark=%s pg_rows=%d duration_ms=%d (%s)",
            batch_id,
            sum(r["rows"] for r in stats),
            len(touched),
            len(rows),
            late_rows,
            closed,
            "none" if watermark_us is None else from_micros(watermark_us).isoformat(),
            changed.get("metrics", 0),
            (time.monotonic() - started) * 1000,
            _phase_ms(started, phases),
        )

    def _rewrite(self, rows: list[dict], scope: Scope) -> None:
        """Atomically replace the gold rows of ``scope`` by ``rows`` (one Delta commit)."""
        if not rows:
            return
        (
            self.spark.createDataFrame(
                [tuple(r[f.name] for f in GOLD_SCHEMA.fields) for r in rows], schema=GOLD_SCHEMA
            )
            .write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", scope.gold_predicate(self.lengths))
            .save(self.gold_path)
        )


def start(spark: SparkSession, settings: Settings, available_now: bool = False) -> StreamingQuery:
    """Start the gold query; ``available_now`` processes what silver holds now, then stops."""
    silver_path, gold_path = settings.table_path("silver"), settings.table_path("gold")
    # Like silver ensures bronze: gold can start first (`run gold` on a fresh lake).
    ensure_tables(spark, silver_path, settings.table_path("quarantine"))
    ensure_gold_table(spark, gold_path)
    checkpoint_in_background(spark, settings, gold_path)
    ensure_checkpoint_owner(settings, "gold", *job_io(settings, "gold"))
    attach_recorder(spark, settings)  # ops hook: pipeline_batches rows
    writer = (
        spark.readStream.format("delta")
        # Rows of rewritten files come again: harmless, they only name windows to recompute.
        .option("ignoreChanges", "true")
        .load(silver_path)
        .select("symbol", "trade_time")
        .writeStream.queryName("gold")
        .option("checkpointLocation", settings.checkpoint_path("gold"))
        .foreachBatch(GoldBatchWriter(spark, settings))
    )
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        interval = settings.gold_trigger_interval_ms
        writer = writer.trigger(processingTime=f"{interval} milliseconds")
    query = writer.start()
    log.info(
        "gold started silver=%s gold=%s windows=%s watermark_s=%d",
        silver_path,
        gold_path,
        ",".join(f"{s}s" for s in window_lengths(settings.window_seconds)),
        settings.watermark_seconds,
    )
    return query
