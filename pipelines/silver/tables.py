"""Delta tables of the silver job: schemas, creation, and the batch ledger in the commit log.

Every silver commit carries ``userMetadata`` ``{"app": <query id>, "batch": N,
"spark_time": ...}`` and the Delta ``txnAppId``/``txnVersion`` pair. The ledger lets a
replayed batch find out that it already committed, when, and which table version preceded
it, so it recomputes byte-identical rows and the same duplicate classification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

SILVER_SCHEMA = StructType(
    [
        StructField("symbol", StringType()),
        StructField("trade_id", LongType()),
        StructField("price", DecimalType(18, 8)),
        StructField("quantity", DecimalType(18, 8)),
        StructField("is_buyer_maker", BooleanType()),
        StructField("event_time", TimestampType()),
        StructField("trade_time", TimestampType()),
        StructField("ingestion_time", TimestampType()),
        StructField("spark_time", TimestampType()),
        StructField("exchange_latency_ms", LongType()),
        StructField("source_latency_ms", LongType()),
        StructField("end_to_end_latency_ms", LongType()),
        StructField("source", StringType()),
        StructField("kafka_partition", IntegerType()),
        StructField("kafka_offset", LongType()),
        StructField("trade_date", DateType()),
    ]
)

QUARANTINE_SCHEMA = StructType(
    [
        StructField("raw_value", BinaryType()),
        StructField("kafka_key", StringType()),
        StructField("topic", StringType()),
        StructField("kafka_partition", IntegerType()),
        StructField("kafka_offset", LongType()),
        StructField("kafka_timestamp", TimestampType()),
        StructField("source", StringType()),
        StructField("symbol", StringType()),
        StructField("trade_id", LongType()),
        StructField("failed_expectations", ArrayType(StringType())),
        StructField("quarantined_at", TimestampType()),
    ]
)
QUARANTINE_KEY = ("topic", "kafka_partition", "kafka_offset")


def ensure_tables(spark: SparkSession, silver_path: str, quarantine_path: str) -> None:
    """Create silver (partitioned by trade_date) and quarantine if they do not exist."""
    (
        DeltaTable.createIfNotExists(spark)
        .location(silver_path)
        .addColumns(SILVER_SCHEMA)
        .partitionedBy("trade_date")
        .execute()
    )
    DeltaTable.createIfNotExists(spark).location(quarantine_path).addColumns(
        QUARANTINE_SCHEMA
    ).execute()


@dataclass(frozen=True)
class CommittedBatch:
    """A silver commit made by (app, batch): its table version and the batch's spark_time."""

    version: int
    spark_time: datetime


def batch_metadata(app: str, batch: int, spark_time: datetime) -> str:
    return json.dumps({"app": app, "batch": batch, "spark_time": spark_time.isoformat()})


def find_committed_batch(
    spark: SparkSession, path: str, app: str, batch: int, lookback: int = 50
) -> CommittedBatch | None:
    """The commit of (app, batch) among the table's last ``lookback`` commits, if any."""
    history = DeltaTable.forPath(spark, path).history(lookback).select("version", "userMetadata")
    for row in history.collect():
        if not row.userMetadata:
            continue
        try:
            meta = json.loads(row.userMetadata)
        except ValueError:
            continue
        if meta.get("app") == app and meta.get("batch") == batch:
            when = datetime.fromisoformat(meta["spark_time"]).astimezone(UTC)
            return CommittedBatch(row.version, when)
    return None


def latest_version(spark: SparkSession, path: str) -> int:
    return DeltaTable.forPath(spark, path).history(1).select("version").first().version
