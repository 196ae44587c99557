"""Silver's Delta tables: schemas, creation, the reads deduplication needs, and the
PostgreSQL tables they are served to.

Every silver commit names its query and batch (``pipelines.ledger``): a replayed batch finds
out that it already committed and which table version preceded it, so it classifies
duplicates against the same silver as the first attempt did.
"""

from __future__ import annotations

import re

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DateType,
    DecimalType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from cryptoflow.core.streams import TRADE, StreamKind
from pipelines.jvm import latest_snapshot
from pipelines.log_checkpoints import NO_INLINE_CHECKPOINTS, ensure_property
from pipelines.serving import UpsertSpec
from pipelines.silver.dedup import Key, KeyIndex
from pipelines.silver.transform import column_types


def spark_type(name: str) -> DataType:
    """The Spark type of a SQL type name of the registry (``column_types``)."""
    m = re.fullmatch(r"decimal\((\d+),(\d+)\)", name)
    if m:
        return DecimalType(int(m[1]), int(m[2]))
    return _TYPES[name]()


_TYPES: dict[str, type[DataType]] = {
    "string": StringType, "bigint": LongType, "int": IntegerType, "boolean": BooleanType,
    "timestamp": TimestampType, "date": DateType,
}  # fmt: skip


def silver_schema(kind: StreamKind) -> StructType:
    """The Delta schema of ``kind``'s silver table: its columns (``StreamKind.columns``)."""
    types = column_types({kind.name: kind})
    return StructType([StructField(c, spark_type(types[c])) for c in kind.columns])


def upsert_spec(kind: StreamKind) -> UpsertSpec:
    """PostgreSQL serving table of ``kind``: silver's columns minus the date partition; the
    first write of a key wins, except over a row that is not final yet (an open kline)."""
    return UpsertSpec(
        kind.entity.table, kind.columns[:-1], kind.entity.key, final=kind.entity.final
    )


SILVER_SCHEMA = silver_schema(TRADE)

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
RAW_TRADES = upsert_spec(TRADE)
QUARANTINE = UpsertSpec("quarantine", tuple(QUARANTINE_SCHEMA.fieldNames()), QUARANTINE_KEY)


def ensure_tables(spark: SparkSession, silver_path: str, quarantine_path: str) -> None:
    """Create silver trades (partitioned by trade_date) and quarantine if they do not exist."""
    ensure_silver_table(spark, TRADE, silver_path)
    (
        DeltaTable.createIfNotExists(spark)
        .location(quarantine_path)
        .addColumns(QUARANTINE_SCHEMA)
        .property(*NO_INLINE_CHECKPOINTS)
        .execute()
    )


#: Delta's table property naming the columns it keeps per-file statistics of.
STATS_COLUMNS = "delta.dataSkippingStatsColumns"


def stats_columns(kind: StreamKind) -> tuple[str, str]:
    """The table property that keeps Delta's per-file statistics (data skipping) to
    ``kind``'s key and time columns, which deduplication's lookups and time-range queries
    filter on. For every column (Delta's default), each append's tasks generated and ran
    min/max code for all of them: ~5% of the driver's CPU with four kinds (JFR)."""
    columns = dict.fromkeys([*kind.entity.key, kind.entity.date[1]])
    return STATS_COLUMNS, ",".join(columns)


def ensure_silver_table(spark: SparkSession, kind: StreamKind, path: str) -> None:
    """Create ``kind``'s silver table (partitioned by its date column) unless it exists; an
    existing one gets ``stats_columns``."""
    (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(silver_schema(kind))
        .partitionedBy(kind.entity.date[0])
        .property(*NO_INLINE_CHECKPOINTS)
        .property(*stats_columns(kind))
        .execute()
    )
    ensure_property(spark, path, *stats_columns(kind))


def table_version(spark: SparkSession, path: str) -> int:
    """The table's latest version, from a listing of its log (no Spark job, unlike
    ``history``)."""
    return latest_snapshot(spark, path).version()


def read_version(spark: SparkSession, path: str, version: int) -> DataFrame:
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def key_index(
    spark: SparkSession, path: str, version: int, record_id: str = TRADE.entity.record_id
) -> KeyIndex:
    """A silver table's highest record id (SQL ``record_id``) per symbol at ``version`` (one
    scan of two columns)."""
    if version < 0:
        return KeyIndex(version)
    table = read_version(spark, path, version)
    rows = table.groupBy("symbol").agg(F.max(F.expr(record_id))).collect()
    return KeyIndex(version, {r[0]: r[1] for r in rows})


def keys_in_silver(
    spark: SparkSession,
    path: str,
    version: int,
    keys: set[Key],
    record_id: str = TRADE.entity.record_id,
) -> set[Key]:
    """Which of ``keys`` (symbol, record id) a silver table holds at ``version``, on any
    date. Record ids grow with time, so Delta's per-file ranges of a plain id column skip all
    but the files that may hold them."""
    if version < 0 or not keys:
        return set()
    wanted = spark.createDataFrame(sorted(keys), "symbol string, record_id long")
    low, high = min(k[1] for k in keys), max(k[1] for k in keys)
    silver = (
        read_version(spark, path, version)
        .where(F.col("symbol").isin(sorted({k[0] for k in keys})))
        .where(F.expr(record_id).between(low, high))
        .select("symbol", F.expr(record_id).alias("record_id"))
    )
    found = silver.join(F.broadcast(wanted), ["symbol", "record_id"], "left_semi").collect()
    return {(r.symbol, r.record_id) for r in found}
