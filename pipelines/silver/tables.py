"""Silver's Delta tables: schemas, creation, the reads deduplication needs, and the
PostgreSQL tables they are served to.

Every silver commit names its query and batch (``pipelines.ledger``): a replayed batch finds
out that it already committed and which table version preceded it, so it classifies
duplicates against the same silver as the first attempt did.
"""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
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

from pipelines.jvm import jvm
from pipelines.log_checkpoints import NO_INLINE_CHECKPOINTS
from pipelines.serving import UpsertSpec
from pipelines.silver.dedup import Key, KeyIndex

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

#: PostgreSQL raw_trades = silver's columns minus the partition column; first write wins.
RAW_TRADES = UpsertSpec(
    "raw_trades", tuple(f.name for f in SILVER_SCHEMA.fields[:-1]), ("symbol", "trade_id")
)
QUARANTINE = UpsertSpec("quarantine", tuple(QUARANTINE_SCHEMA.fieldNames()), QUARANTINE_KEY)


def ensure_tables(spark: SparkSession, silver_path: str, quarantine_path: str) -> None:
    """Create silver (partitioned by trade_date) and quarantine if they do not exist."""
    (
        DeltaTable.createIfNotExists(spark)
        .location(silver_path)
        .addColumns(SILVER_SCHEMA)
        .partitionedBy("trade_date")
        .property(*NO_INLINE_CHECKPOINTS)
        .execute()
    )
    (
        DeltaTable.createIfNotExists(spark)
        .location(quarantine_path)
        .addColumns(QUARANTINE_SCHEMA)
        .property(*NO_INLINE_CHECKPOINTS)
        .execute()
    )


def table_version(spark: SparkSession, path: str) -> int:
    """The table's latest version, from a listing of its log (no Spark job, unlike
    ``history``)."""
    view = jvm(spark)
    delta_log = view.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    return delta_log.update(False, view.scala.Option.empty(), view.scala.Option.empty()).version()


def read_version(spark: SparkSession, path: str, version: int) -> DataFrame:
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def key_index(spark: SparkSession, path: str, version: int) -> KeyIndex:
    """Silver's highest trade id per symbol at ``version`` (one scan of two columns)."""
    if version < 0:
        return KeyIndex(version)
    rows = read_version(spark, path, version).groupBy("symbol").agg(F.max("trade_id")).collect()
    return KeyIndex(version, {r[0]: r[1] for r in rows})


def keys_in_silver(spark: SparkSession, path: str, version: int, keys: set[Key]) -> set[Key]:
    """Which of ``keys`` silver holds at ``version``, on any trade date. Trade ids grow with
    time, so Delta's per-file id ranges skip all but the files that may hold them."""
    if version < 0 or not keys:
        return set()
    wanted = spark.createDataFrame(sorted(keys), "symbol string, trade_id long")
    low, high = min(k[1] for k in keys), max(k[1] for k in keys)
    silver = (
        read_version(spark, path, version)
        .where(F.col("symbol").isin(sorted({k[0] for k in keys})))
        .where(F.col("trade_id").between(low, high))
        .select("symbol", "trade_id")
    )
    found = silver.join(F.broadcast(wanted), ["symbol", "trade_id"], "left_semi").collect()
    return {(r.symbol, r.trade_id) for r in found}
