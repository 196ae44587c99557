"""The Spark side of a batch placed in executors (``CRYPTOFLOW_BATCH_PLACEMENT``): the
DataFrames the driver plans around the task functions of ``pipelines.batch_tasks``. Nothing
here brings a batch's rows into the driver; what it collects is one row per (kind, symbol)
at most."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from functools import partial, reduce

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, StringType, StructField, StructType

from cryptoflow.core.streams import StreamKind
from pipelines.batch_tasks import CLASS, LOOKUP, KindTask, classify_partition
from pipelines.silver.dedup import DUPLICATE, NEW, REJECTED
from pipelines.silver.tables import QUARANTINE_SCHEMA, read_version

#: The flag column of ``looked_up``'s join.
_IN_SILVER = "_in_silver"


def classified_frame(evaluated: DataFrame, kinds: Sequence[KindTask], partitions: int) -> DataFrame:
    """``evaluated`` partitioned by symbol into ``partitions`` parts, each row with its class
    and ``lookup`` flag (``classify_partition``)."""
    keyed = evaluated.repartition(partitions, F.col("symbol"))
    schema = StructType(
        [*evaluated.schema.fields, StructField(CLASS, StringType()),
         StructField(LOOKUP, BooleanType())]
    )  # fmt: skip
    return keyed.mapInArrow(partial(classify_partition, kinds=kinds), schema)


def unique_rule_name(unique_rules: Mapping[str, str]) -> Column:
    """Each row's kind's unique-key rule name (``unique_rules``: by kind)."""
    name = F.lit(None).cast("string")
    for kind, rule in unique_rules.items():
        name = F.when(F.col("kind") == kind, F.lit(rule)).otherwise(name)
    return name


def checks(
    classified: DataFrame, unique_rules: Mapping[str, str], unique_fail: Sequence[str]
) -> list[Row]:
    """Per (kind, symbol) with rows to look up or a failing row: the range of record ids to
    look up in silver (``low``, ``high``) and the first row a ``fail`` rule rejected
    (``failed``: partition, offset, topic, rule). ``unique_fail``: the kinds whose duplicates
    fail. One small job."""
    failing = F.col("fail_rule").isNotNull()
    if unique_fail:
        failing |= F.col("kind").isin(list(unique_fail)) & (F.col(CLASS) == DUPLICATE)
    rule = F.coalesce(F.col("fail_rule"), unique_rule_name(unique_rules)).alias("rule")
    lookup = F.col(LOOKUP)
    first_failed = F.struct("kafka_partition", "kafka_offset", "topic", rule)
    return (
        classified.where(lookup | failing)
        .groupBy("kind", "symbol")
        .agg(
            F.min(F.when(lookup, F.col("record_id"))).alias("low"),
            F.max(F.when(lookup, F.col("record_id"))).alias("high"),
            F.min(F.when(failing, first_failed)).alias("failed"),
        )
        .collect()
    )


def first_failed(found: Sequence[Row]) -> Row | None:
    """The first (by Kafka position) of the ``failed`` rows of ``checks``."""
    failed = [c.failed for c in found if c.failed is not None]
    return min(failed, key=lambda f: (f.kafka_partition, f.kafka_offset)) if failed else None


def silver_keys(
    spark: SparkSession, path: str, version: int, kind: StreamKind, ranges: Sequence[Row]
) -> DataFrame:
    """The keys of ``kind``'s silver table (at ``version``) in ``checks``' ``ranges``: Delta's
    per-file ranges of the key columns skip the files that cannot hold them."""
    record_id = F.expr(kind.entity.record_id)
    where = reduce(
        operator.or_,
        [(F.col("symbol") == r.symbol) & record_id.between(r.low, r.high) for r in ranges],
    )
    return (
        read_version(spark, path, version)
        .where(where)
        .select(F.lit(kind.name).alias("kind"), "symbol", record_id.alias("record_id"))
    )


def looked_up(classified: DataFrame, found: DataFrame) -> DataFrame:
    """``classified`` with its ``lookup`` rows whose key is among ``found`` (``silver_keys``)
    made duplicates; ``lookup`` then marks exactly those."""
    flags = F.broadcast(found.withColumn(_IN_SILVER, F.lit(True)))
    flagged = classified.join(flags, ["kind", "symbol", "record_id"], "left")
    duplicate = F.col(LOOKUP) & F.col(_IN_SILVER).isNotNull()
    flagged = flagged.withColumn(CLASS, F.when(duplicate, DUPLICATE).otherwise(F.col(CLASS)))
    return flagged.withColumn(LOOKUP, duplicate).drop(_IN_SILVER)


def first_looked_up(
    rows: DataFrame, unique_rules: Mapping[str, str], kinds: Sequence[str]
) -> Row | None:
    """The first (by Kafka position) row of ``kinds`` that ``looked_up`` made a duplicate."""
    first = (
        rows.where(F.col(LOOKUP) & F.col("kind").isin(list(kinds)))
        .select("topic", "kafka_partition", "kafka_offset",
                unique_rule_name(unique_rules).alias("rule"))
        .orderBy("kafka_partition", "kafka_offset")
        .limit(1)
        .collect()
    )  # fmt: skip
    return first[0] if first else None


def new_rows(rows: DataFrame, kind: StreamKind) -> DataFrame:
    """``kind``'s new rows, as its silver table takes them."""
    new = rows.where((F.col("kind") == kind.name) & (F.col(CLASS) == NEW))
    return new.select(*kind.columns)


def quarantine_frame(rows: DataFrame, unique_rules: Mapping[str, str]) -> DataFrame:
    """The quarantine rows (``QUARANTINE_SCHEMA``) of classified rows: the rejected records
    with the rules they failed, the duplicates under their kind's unique-key rule."""
    reasons = F.when(F.col(CLASS) == DUPLICATE, F.array(unique_rule_name(unique_rules)))
    special = {
        "failed_expectations": reasons.otherwise(F.col("failed_expectations")),
        "quarantined_at": F.col("spark_time"),
    }
    return rows.where(F.col(CLASS).isin(REJECTED, DUPLICATE)).select(
        *(special.get(c, F.col(c)).alias(c) for c in QUARANTINE_SCHEMA.fieldNames())
    )
