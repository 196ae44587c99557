"""Gold job: Delta silver stream -> exact windowed metrics -> Delta gold + Postgres ``metrics``.

Each micro-batch of new silver rows only says which (symbol, window) pairs changed. Those
windows are recomputed from the whole silver table (a read pruned by trade_date, symbol and
time range), MERGEd into Delta gold and upserted into Postgres in one transaction. A late
trade (a gap backfill, a slow partition) therefore corrects its window whenever it arrives,
and a replayed batch recomputes the same values: the job is idempotent and exact.

``settings.watermark_seconds`` decides what counts as late: a row older than (newest trade
time of the earlier batches - watermark) is counted and logged per batch, and its window is
still corrected. See docs/gold.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from functools import reduce

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from cryptoflow.config import Settings
from cryptoflow.errors import ServiceError
from cryptoflow.services.postgres import pipeline_dsn
from pipelines.gold.transform import (
    GOLD_SCHEMA,
    METRIC_COLUMNS,
    finish,
    from_micros,
    merge_ranges,
    window_dates,
    window_lengths,
    window_start_us,
    window_sums,
)
from pipelines.serving import UpsertSpec, mirror

log = logging.getLogger(__name__)

METRICS_SPEC = UpsertSpec(
    "metrics", METRIC_COLUMNS, ("symbol", "window_start", "window_end"), update=True
)
#: Above this many separate time ranges, the silver read uses one covering range instead.
MAX_RANGES = 64
Window = tuple[str, int, int]  # (symbol, window_seconds, window_start_us)


def ensure_gold_table(spark: SparkSession, path: str) -> None:
    """Create the gold Delta table (partitioned by window_date) unless it exists."""
    (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(GOLD_SCHEMA)
        .partitionedBy("window_date")
        .execute()
    )


def _in_ranges(ranges: Iterable[tuple[int, int]]) -> Column:
    us = F.unix_micros("trade_time")
    return reduce(lambda a, b: a | b, [(us >= F.lit(s)) & (us < F.lit(e)) for s, e in ranges])


def silver_for(silver: DataFrame, windows: set[Window]) -> DataFrame:
    """The silver rows that can belong to ``windows``: partition-pruned by trade_date, then
    filtered by symbol and trade-time ranges (Delta skips files by their min/max stats)."""
    ranges = merge_ranges((start, start + seconds * 1_000_000) for _, seconds, start in windows)
    if len(ranges) > MAX_RANGES:
        ranges = [(ranges[0][0], ranges[-1][1])]
    symbols = sorted({symbol for symbol, _, _ in windows})
    return silver.where(
        F.col("trade_date").isin(window_dates(ranges))
        & F.col("symbol").isin(symbols)
        & _in_ranges(ranges)
    )


def _phase_ms(started: float, phases: dict[str, float]) -> str:
    """``find=12 recompute=340 ...``: milliseconds spent in each phase of a batch."""
    out, previous = [], started
    for name, at in phases.items():
        out.append(f"{name}={(at - previous) * 1000:.0f}")
        previous = at
    return " ".join(out)


class GoldBatchWriter:
    """The foreachBatch function: recompute touched windows, MERGE to Delta, upsert to PG."""

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
        late = F.lit(False) if watermark_us is None else us < F.lit(watermark_us)
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
        silver = self.spark.read.format("delta").load(self.silver_path)
        sums = window_sums(silver_for(silver, touched), self.lengths).collect()
        rows = [
            finish(r.asDict())
            for r in sums
            if (r["symbol"], r["window_seconds"], r["window_start_us"]) in touched
        ]
        phases["recompute"] = time.monotonic()
        if len(rows) != len(touched):
            log.warning(
                "gold batch=%d windows_touched=%d windows_found_in_silver=%d",
                batch_id,
                len(touched),
                len(rows),
            )
        self._merge(rows)
        phases["merge"] = time.monotonic()
        changed = mirror(
            self.dsn,
            [(METRICS_SPEC, [tuple(r[c] for c in METRIC_COLUMNS) for r in rows])],
            retry_seconds=self.settings.mirror_retry_seconds,
            what=f"gold batch {batch_id}",
        )
        phases["postgres"] = time.monotonic()
        batch_max = max(r["max_us"] for r in stats)
        self.max_seen_us = max(batch_max, self.max_seen_us or batch_max)
        closed = sum(
            1
            for r in rows
            if watermark_us is not None and r["window_end"] <= from_micros(watermark_us)
        )
        log.info(
            "gold batch=%d rows=%d windows=%d late_rows=%d closed_windows_corrected=%d "
            "watermark=%s pg_rows=%d duration_ms=%d (%s)",
            batch_id,
            sum(r["rows"] for r in stats),
            len(rows),
            sum(r["late"] for r in stats),
            closed,
            "none" if watermark_us is None else from_micros(watermark_us).isoformat(),
            changed.get("metrics", 0),
            (time.monotonic() - started) * 1000,
            _phase_ms(started, phases),
        )

    def _merge(self, rows: list[dict]) -> None:
        """Upsert ``rows`` into Delta gold by (symbol, window_start, window_end)."""
        if not rows:
            return
        source = self.spark.createDataFrame(
            [tuple(r[f.name] for f in GOLD_SCHEMA.fields) for r in rows], schema=GOLD_SCHEMA
        )
        dates = sorted({r["window_date"] for r in rows})
        condition = (
            F.col("t.window_date").isin(dates)  # partition pruning of the target
            & (F.col("t.window_date") == F.col("s.window_date"))
            & (F.col("t.symbol") == F.col("s.symbol"))
            & (F.col("t.window_start") == F.col("s.window_start"))
            & (F.col("t.window_end") == F.col("s.window_end"))
        )
        (
            DeltaTable.forPath(self.spark, self.gold_path)
            .alias("t")
            .merge(source.alias("s"), condition)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )


def start(spark: SparkSession, settings: Settings, available_now: bool = False) -> StreamingQuery:
    """Start the gold query; ``available_now`` processes what silver holds now, then stops."""
    silver_path, gold_path = settings.table_path("silver"), settings.table_path("gold")
    if not DeltaTable.isDeltaTable(spark, silver_path):
        raise ServiceError(
            f"silver Delta table not found at {silver_path}: start the silver job first "
            "(`cryptoflow run silver`, or `cryptoflow run all`)"
        )
    ensure_gold_table(spark, gold_path)
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
        writer = writer.trigger(processingTime=f"{settings.trigger_interval_ms} milliseconds")
    query = writer.start()
    log.info(
        "gold started silver=%s gold=%s windows=%s watermark_s=%d",
        silver_path,
        gold_path,
        ",".join(f"{s}s" for s in window_lengths(settings.window_seconds)),
        settings.watermark_seconds,
    )
    return query
