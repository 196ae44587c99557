"""Bronze: Kafka records as they came, plus where and when they were read. Nothing is parsed."""

from __future__ import annotations

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
    """Kafka source rows (with ``includeHeaders``) -> bronze rows.

    ``value`` stays binary byte for byte; headers become ``array<struct<key, value string>>``
    (an array, not a map: Kafka allows repeated header keys); ``bronze_time`` is when the
    micro-batch ran; ``ingest_date`` (UTC date of the Kafka timestamp) partitions the table.
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
        F.current_timestamp().alias("bronze_time"),
        F.to_date(kafka["timestamp"]).alias("ingest_date"),
    )
