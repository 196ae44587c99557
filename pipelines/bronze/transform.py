"""Bronze: Kafka records as they came, plus where and when they were read. Nothing is parsed."""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DateType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from pipelines.batch_values import opaque_timestamp

#: Bronze Delta schema, in column order (``ingest_date`` is the partition column).
BRONZE_SCHEMA = StructType(
    [
        StructField("value", BinaryType()),
        StructField("key", StringType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("kafka_timestamp", TimestampType()),
        StructField(
            "headers",
            ArrayType(
                StructType([StructField("key", StringType()), StructField("value", StringType())])
            ),
        ),
        StructField("bronze_time", TimestampType()),
        StructField("ingest_date", DateType()),
    ]
)


def header_value(headers: Column, name: str) -> Column:
    """The value of the first header called ``name`` in bronze's ``headers`` array, or NULL."""
    return F.get(F.filter(headers, lambda h: h["key"] == F.lit(name)), 0)["value"]


def to_bronze(kafka: DataFrame) -> DataFrame:
    """Kafka source rows (with ``includeHeaders``) -> bronze rows but ``bronze_time``.

    ``value`` stays binary byte for byte; headers become ``array<struct<key, value string>>``
    (an array, not a map: Kafka allows repeated header keys); ``ingest_date`` (UTC date of
    the Kafka timestamp) partitions the table. ``bronze_rows`` adds ``bronze_time`` per batch.
    """
    headers = F.transform(
        F.coalesce(kafka["headers"], F.array().cast("array<struct<key:string,value:binary>>")),
        lambda h: F.struct(h["key"].alias("key"), h["value"].cast("string").alias("value")),
    )
    return kafka.select(
        kafka["value"],
        kafka["key"].cast("string").alias("key"),
        kafka["topic"],
        kafka["partition"],
        kafka["offset"],
        kafka["timestamp"].alias("kafka_timestamp"),
        headers.alias("headers"),
        F.to_date(kafka["timestamp"]).alias("ingest_date"),
    )


def bronze_rows(parsed: DataFrame, written_at: datetime) -> DataFrame:
    """A batch's bronze rows, in ``BRONZE_SCHEMA`` order, from its parsed rows
    (``parse_frames`` keeps every bronze column under its own name) with ``bronze_time`` =
    ``written_at``. Not ``current_timestamp()``: Spark writes the batch timestamp into the
    generated code, so each batch compiled its own classes (``pipelines.batch_values``)."""
    at = opaque_timestamp(F.lit(written_at).cast("timestamp"), F.col("topic"))
    return parsed.select(
        F.col("raw_value").alias("value"),
        F.col("kafka_key").alias("key"),
        F.col("topic"),
        F.col("kafka_partition").alias("partition"),
        F.col("kafka_offset").alias("offset"),
        F.col("kafka_timestamp"),
        F.col("headers"),
        at.alias("bronze_time"),
        F.to_date(F.col("kafka_timestamp")).alias("ingest_date"),
    )
