"""Gold rebuilt from silver: the exact window sums recomputed by Spark, replacing the folded
ones in PostgreSQL (``metric_sums``, ``metrics``) and Delta gold (``cryptoflow replay``).

The live fold adds each batch's new trades to its windows' sums; this recomputes the same
sums from every silver trade at once (``window_sums``) and derives the rows with the same
``finish``, so a rebuilt window equals the folded one column for column.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.services.postgres import admin_dsn
from pipelines.gold.fold import ADDED, METRICS_SPEC
from pipelines.gold.sync import ensure_gold_table
from pipelines.gold.transform import (
    LATENCIES,
    METRIC_COLUMNS,
    finish,
    from_micros,
    gold_frame,
    window_lengths,
    window_sums,
)
from pipelines.serving import UpsertSpec, copy_upsert

log = logging.getLogger(__name__)

#: ``metric_sums`` as a rebuild writes it (``change_seq`` takes its default: a new change).
METRIC_SUMS_SPEC = UpsertSpec(
    "metric_sums",
    ("symbol", "window_seconds", "window_start", *ADDED, "min_price", "max_price",
     "last_trade_time", "lake"),
    ("symbol", "window_seconds", "window_start"),
    update=True,
)  # fmt: skip


def sums_row(sums: Mapping[str, Any], lake: str) -> tuple:
    """One ``window_sums`` row as a ``metric_sums`` row (``METRIC_SUMS_SPEC`` order)."""
    row = dict(sums)
    row["window_start"] = from_micros(int(sums["window_start_us"]))
    row["last_trade_time"] = from_micros(int(sums["last_trade_us"]))
    row["lake"] = lake
    for name in LATENCIES:  # the fold's coalesce: a sum over no latency is 0
        row[f"sum_{name}"] = row[f"sum_{name}"] or 0
    return tuple(row[c] for c in METRIC_SUMS_SPEC.columns)


def rebuild_gold(
    spark: SparkSession, settings: Settings, symbols: Sequence[str] | None = None
) -> int:
    """Recompute the windows of ``symbols`` (None: every symbol of silver and of this lake's
    folded windows) from Delta silver; returns the windows written."""
    lake = settings.table_path("gold")
    ensure_gold_table(spark, lake)
    silver = spark.read.format("delta").load(settings.table_path("silver"))
    if symbols is not None:
        silver = silver.where(F.col("symbol").isin(list(symbols)))
    lengths = window_lengths(settings.window_seconds)
    sums = [r.asDict() for r in window_sums(silver, lengths).collect()]
    gold = [finish(s) for s in sums]
    conn = connect(admin_dsn(settings))  # DELETE is an operator's right, not the pipeline's
    try:
        with conn, conn.cursor() as cur:
            if symbols is None:
                cur.execute("SELECT DISTINCT symbol FROM metric_sums WHERE lake = %s", (lake,))
                scope = sorted({r[0] for r in cur.fetchall()} | {s["symbol"] for s in sums})
            else:
                scope = sorted(symbols)
            cur.execute(
                "DELETE FROM metric_sums WHERE lake = %s AND symbol = ANY(%s)", (lake, scope)
            )
            cur.execute("DELETE FROM metrics WHERE symbol = ANY(%s)", (scope,))
            copy_upsert(cur, METRIC_SUMS_SPEC, [sums_row(s, lake) for s in sums])
            copy_upsert(cur, METRICS_SPEC, [tuple(r[c] for c in METRIC_COLUMNS) for r in gold])
    finally:
        conn.close()
    writer = gold_frame(spark, gold).write.format("delta").mode("overwrite")
    if symbols is not None:
        listed = ", ".join(_sql_string(s) for s in scope) or "NULL"
        writer = writer.option("replaceWhere", f"symbol IN ({listed})")
    writer.save(lake)
    log.info("gold rebuilt from silver symbols=%s windows=%d", ",".join(scope) or "-", len(gold))
    return len(gold)


def _sql_string(text: str) -> str:
    """``text`` as a Spark SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
