"""The pipeline's streaming plan compiles its code once, not once per micro-batch.

Spark compiles each distinct generated source with Janino. A per-batch value written into
the source (the batch timestamp, as ``current_timestamp()`` puts it there) made every batch
compile the big parse and validation stage anew: two compilations a batch, a large share of
the driver's CPU at a live rate. ``pipelines.batch_values.batch_timestamp`` keeps it out.
"""

from __future__ import annotations

import json

from pyspark.sql import functions as F

from pipelines.job import kind_plans, validated_records
from tests.conftest import wait_until

ALL_KINDS = "trade,aggTrade,kline_1m,bookTicker"


#: A trade frame with its id from the rate source's counter.
TRADE_FRAME = json.dumps(
    {
        "e": "trade",
        "E": 1_700_000_000_002,
        "s": "BTCUSDT",
        "t": 0,
        "p": "100.5",
        "q": "0.25",
        "T": 1_700_000_000_000,
        "m": True,
        "M": True,
    }  # fmt: skip
).replace('"t": 0', '"t": %d')


def test_parse_and_validation_compile_once_and_carry_each_batch_time(settings, spark):
    s = settings.replace(streams=ALL_KINDS)
    plans = kind_plans(s)
    topics = [s.topic(p.kind) for p in plans]
    rate = spark.readStream.format("rate").option("rowsPerSecond", 40).load()
    # Bronze-shaped rows of every kind's topic: trades parse, the others land in parse errors;
    # either way each batch runs the whole plan.
    bronze = rate.select(
        F.format_string(TRADE_FRAME, F.col("value")).cast("binary").alias("value"),
        F.lit("BTCUSDT").alias("key"),
        F.element_at(
            F.array(*[F.lit(t) for t in topics]), (F.col("value") % 4 + 1).cast("int")
        ).alias("topic"),
        F.lit(0).alias("partition"),
        F.col("value").alias("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.array().cast("array<struct<key:string,value:string>>").alias("headers"),
        F.to_date("timestamp").alias("ingest_date"),
    )
    source = validated_records(bronze, s, plans)
    compilations = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics
    seen: list[tuple[int, int, list]] = []

    def batch(df, batch_id: int) -> None:
        times = [r[0] for r in df.select("spark_time").distinct().collect()]
        seen.append((batch_id, compilations.METRIC_COMPILATION_TIME().getCount(), times))

    query = (
        source.writeStream.foreachBatch(batch)
        .trigger(processingTime="300 milliseconds")
        .option("checkpointLocation", str(s.data_dir / "checkpoints" / "codegen-test"))
        .start()
    )
    try:
        wait_until(lambda: len([b for b in seen if b[2]]) >= 6, timeout=180, what="6 batches")
    finally:
        query.stop()
    with_rows = [b for b in seen if b[2]]
    # Every row of a batch carries that batch's one timestamp, a new one each batch.
    assert all(len(times) == 1 for _, _, times in with_rows)
    batch_times = [times[0] for _, _, times in with_rows]
    assert batch_times == sorted(batch_times) and len(set(batch_times)) == len(batch_times)
    # Warmed up after the first two batches: no compilation after that.
    counts = [count for _, count, _ in with_rows[2:]]
    assert counts == [counts[0]] * len(counts), seen
