"""Per-batch values stay out of Spark's generated code (``pipelines.batch_values``), so the
code of a job's plan is the same from batch to batch and compiles once."""

from __future__ import annotations

from datetime import UTC, date, datetime

from pyspark.sql import functions as F

from pipelines.batch_values import opaque_long, opaque_timestamp
from pipelines.bronze.transform import BRONZE_SCHEMA, bronze_rows
from pipelines.silver.transform import parse_frames

BATCH_TIME = datetime(2026, 11, 26, 14, 0, 1, 234567, tzinfo=UTC)
BATCH_MICROS = 1_795_701_601_234_567  # BATCH_TIME since the epoch


def _generated_code(df) -> str:
    """The Java source Spark generates for ``df``'s physical plan."""
    stages = df._jdf.queryExecution().debug().codegenToSeq()
    return "\n".join(stages.apply(i)._2() for i in range(stages.size()))


def _frames(spark):
    rows = [
        (b'{"e":"trade"}', "K", "t", 0, 7, BATCH_TIME, [], BATCH_TIME, date(2026, 11, 26)),
        (b"x", "K", "t", 0, 8, BATCH_TIME, [], BATCH_TIME, date(2026, 11, 26)),
    ]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def test_values_are_exact_and_absent_from_generated_code(spark):
    assert int(BATCH_TIME.timestamp() * 1_000_000) == BATCH_MICROS
    df = _frames(spark).select(
        opaque_timestamp(F.lit(BATCH_TIME).cast("timestamp"), F.col("topic")).alias("ts"),
        opaque_long(BATCH_MICROS + 1, F.col("topic")).alias("n"),
        (F.col("offset") < opaque_long(8, F.col("topic"))).alias("before_8"),
    )
    rows = df.collect()
    assert [r.n for r in rows] == [BATCH_MICROS + 1] * 2
    assert [r.before_8 for r in rows] == [True, False]
    assert {r.ts.astimezone(UTC) for r in rows} == {BATCH_TIME}
    code = _generated_code(df)
    assert "GeneratedIterator" in code or "SpecificUnsafeProjection" in code
    assert str(BATCH_MICROS) not in code
    assert str(BATCH_MICROS + 1) not in code


def test_a_plain_literal_would_be_in_the_code(spark):
    """The check above can fail: Spark does inline a plain timestamp literal."""
    df = _frames(spark).select(F.lit(BATCH_TIME).cast("timestamp").alias("ts"), "offset")
    assert str(BATCH_MICROS) in _generated_code(df.where(F.col("offset") >= 0))


def test_bronze_stamp_is_exact_ordered_and_out_of_the_code(spark):
    records = _frames(spark)
    stamped = bronze_rows(parse_frames(records), BATCH_TIME)
    assert stamped.schema == BRONZE_SCHEMA
    rows = stamped.collect()
    assert {r.bronze_time.astimezone(UTC) for r in rows} == {BATCH_TIME}
    # Every other column is the record's own, byte for byte (bronze_rows reads them back
    # from parse_frames' output).
    others = [f.name for f in BRONZE_SCHEMA if f.name != "bronze_time"]
    assert sorted(tuple(r[c] for c in others) for r in rows) == sorted(
        tuple(r[c] for c in others) for r in records.collect()
    )
    assert str(BATCH_MICROS) not in _generated_code(stamped)
