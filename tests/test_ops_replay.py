"""Replay against the real services: rebuilding gold from silver and silver from bronze gives
exactly the rows of the live run, in Delta and in PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipelines import job
from pipelines.ops.checkpoints import read_owner
from pipelines.ops.replay import ReplayError, replay
from pipelines.silver.tables import RAW_TRADES
from tests.conftest import wait_until
from tests.pipeline_helpers import isolated, pg_rows, produce, produce_trades, trades

pytestmark = pytest.mark.integration
#: Silver columns set when silver processes a row (processing time), not by the input.
PROCESSING_TIME = ("spark_time", "end_to_end_latency_ms")


def drain(spark, s) -> None:
    """Run the pipeline's query over what Kafka holds, then stop it (Delta gold caught up)."""
    query = job.start(spark, s, available_now=True)
    query.awaitTermination(300)
    assert query.exception() is None, query.exception()
    job.stop(query)


def utc(value):
    """Naive datetimes (PySpark: local time) as aware UTC, like psycopg2 returns them."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.astimezone(UTC)
    return value


def delta_rows(spark, s, table: str, drop: tuple[str, ...] = ()) -> list[tuple]:
    df = spark.read.format("delta").load(s.table_path(table)).drop(*drop)
    return sorted(tuple(utc(v) for v in r) for r in df.collect())


def pg_metrics(s) -> list[tuple]:
    return pg_rows(
        s,
        "SELECT symbol, window_start, window_end, trade_count, total_volume, vwap, price_stddev,"
        " buy_sell_ratio, avg_end_to_end_latency_ms FROM metrics WHERE symbol = ANY(%s)"
        " ORDER BY 1, 2, 3",
        (s.symbols,),
    )


def pg_raw_trades(s) -> list[tuple]:
    cols = ", ".join(RAW_TRADES.columns)
    return pg_rows(
        s, f"SELECT {cols} FROM raw_trades WHERE symbol = ANY(%s) ORDER BY 1, 2", (s.symbols,)
    )


def test_replay_gives_the_live_rows(spark, settings, unique, tmp_path):
    s = isolated(settings, unique, tmp_path)
    live = trades(120, s.symbols)
    produce_trades(s, live + live[:4])  # four repeats: quarantined as duplicates
    produce(s, [(b"junk", b"not json")])
    drain(spark, s)
    silver = delta_rows(spark, s, "silver", PROCESSING_TIME)
    quarantine = delta_rows(spark, s, "quarantine", ("quarantined_at",))
    gold = delta_rows(spark, s, "gold")
    metrics = pg_metrics(s)
    assert len(silver) + len(quarantine) == 125 and len(quarantine) >= 5
    assert gold and len(metrics) == len(gold)
    # The live batches are in pipeline_batches (listener + the batch's record_batch).
    query_id = json.loads(Path(s.checkpoint_path("trades"), "metadata").read_text())["id"]
    totals = wait_until(
        lambda: [
            r
            for r in pg_rows(
                s,
                "SELECT sum(input_rows), sum(output_rows), sum(quarantined), "
                "count(latency_p99_ms) FROM pipeline_batches WHERE job = 'trades' "
                "AND query_id = %s",
                (query_id,),
            )
            if r[0] == 125
        ],
        what="the query's batches recorded",
    )
    assert totals == [(125, len(silver), len(quarantine), totals[0][3])] and totals[0][3] >= 1

    # Gold from silver: every column identical, in Delta and in PostgreSQL. Recomputed from
    # silver at once: no streaming query, so no checkpoint and no batches.
    result = replay(spark, s, "gold")
    assert delta_rows(spark, s, "gold") == gold
    assert pg_metrics(s) == metrics
    assert (result.rows_before, result.rows_after) == (len(gold), len(gold))
    assert result.checkpoint_moved_to is None and result.batches == 0
    assert result.pg_deleted == 0

    # Silver from bronze: identical but for the time silver processed each row, and
    # PostgreSQL now holds exactly the rebuilt rows.
    result = replay(spark, s, "silver")
    assert delta_rows(spark, s, "silver", PROCESSING_TIME) == silver
    assert delta_rows(spark, s, "quarantine", ("quarantined_at",)) == quarantine
    assert pg_raw_trades(s) == delta_rows(spark, s, "silver", ("trade_date",))
    assert result.pg_deleted == 0 and result.rows_after == len(silver) and result.batches >= 1
    assert read_owner(s.checkpoint_path("replay-silver")).source == s.table_path("bronze")

    # Partial: replaying bronze from its first data commit recomputes the same rows and
    # quarantines nothing twice; the newer bronze commits (20 more trades the live query
    # drained after the rebuild) are recomputed too.
    produce_trades(s, trades(140, s.symbols)[120:])
    drain(spark, s)
    result = replay(spark, s, "silver", from_version=1)
    assert result.checkpoint_moved_to and result.batches >= 1
    rebuilt = spark.read.format("delta").load(s.table_path("silver"))
    assert rebuilt.count() == len(silver) + 20 and result.from_version == 1
    assert rebuilt.groupBy("symbol", "trade_id").count().where(F.col("count") > 1).count() == 0
    assert delta_rows(spark, s, "quarantine", ("quarantined_at",)) == quarantine
    assert len(pg_raw_trades(s)) == len(silver) + 20

    with pytest.raises(ReplayError) as e:
        replay(spark, s, "gold", from_version=99)
    assert str(e.value).startswith("version 99 is outside silver's history (versions 0..")
