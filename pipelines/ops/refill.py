"""Refill PostgreSQL's raw_trades and metrics of some days from the lake (``cryptoflow replay
serving --day D``), e.g. days that the serving retention dropped (``pipelines.ops.retention``).

raw_trades: silver's trades of those days (silver is partitioned by trade_date, so only
those days are read) are upserted with the pipeline's own spec: a trade already there stays
as it is. They are not folded again: ``metric_sums`` still counts them (retention never
drops it), so metrics of those days are derived from their sums with the fold's own
``finish``, exactly the rows the live fold wrote. The day partitions are created by the
upserts themselves (``pipelines.serving.ensure_day_partitions``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.services.postgres import admin_dsn
from pipelines.gold.fold import METRICS_SPEC, as_window_sums, fetch_dicts
from pipelines.gold.transform import METRIC_COLUMNS, finish
from pipelines.serving import copy_upsert
from pipelines.silver.tables import RAW_TRADES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refilled:
    first: date
    last: date
    silver_rows: int  # silver's trades of those days
    trades_inserted: int  # of them, not in raw_trades before
    windows: int  # metrics rows written from metric_sums
    seconds: float


def refill_days(spark: SparkSession, settings: Settings, first: date, last: date) -> Refilled:
    """Refill raw_trades and metrics of the UTC days ``first``..``last`` (module doc), one
    transaction per day (a day's trades, not the whole range, are held in memory)."""
    if last < first:
        raise ValueError(f"refill: --until {last} is before {first}")
    started = time.monotonic()
    silver = spark.read.format("delta").load(settings.table_path("silver"))
    rows = inserted = windows = 0
    day = first
    while day <= last:
        trades = silver.where(F.col("trade_date") == day).select(*RAW_TRADES.columns).toArrow()
        since = datetime.combine(day, clock(), UTC)
        conn = connect(admin_dsn(settings))
        try:
            with conn, conn.cursor() as cur:
                inserted += copy_upsert(cur, RAW_TRADES, trades) if trades.num_rows else 0
                cur.execute(
                    "SELECT * FROM metric_sums WHERE lake = %s "
                    "AND window_start >= %s AND window_start < %s",
                    (settings.table_path("gold"), since, since + timedelta(days=1)),
                )
                gold = [finish(as_window_sums(r)) for r in fetch_dicts(cur)]
                copy_upsert(cur, METRICS_SPEC, [tuple(r[c] for c in METRIC_COLUMNS) for r in gold])
        finally:
            conn.close()
        rows, windows, day = rows + trades.num_rows, windows + len(gold), day + timedelta(days=1)
    result = Refilled(first, last, rows, inserted, windows, time.monotonic() - started)
    log.info(
        "serving refilled days=%s..%s silver_rows=%d trades_inserted=%d windows=%d "
        "duration_s=%.1f",
        first, last, rows, inserted, windows, result.seconds,
    )  # fmt: skip
    return result
