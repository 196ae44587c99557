"""Deduplication on (symbol, trade_id), within a batch and against what silver already holds."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

KEY = ("symbol", "trade_id")
NEW, DUPLICATE, REJECTED = "new", "duplicate", "rejected"


def classify(evaluated: DataFrame, existing_keys: DataFrame | None) -> DataFrame:
    """Add ``row_class``: ``rejected`` (a drop rule failed), ``duplicate`` (its key is already
    in silver, or an earlier Kafka record of this batch has it) or ``new``.

    ``evaluated`` comes from ``validate.apply_rules``; ``existing_keys`` holds the
    (symbol, trade_id) pairs silver had before this batch (None: silver is empty). Within a
    batch the first record by (partition, offset) wins, so a replay classifies identically.
    """
    order = Window.partitionBy(*KEY).orderBy("dropped", "kafka_partition", "kafka_offset")
    ranked = evaluated.withColumn("_rank", F.row_number().over(order))
    if existing_keys is not None:
        seen = existing_keys.select(*KEY).distinct().withColumn("_seen", F.lit(True))
        ranked = ranked.join(seen, list(KEY), "left")
    else:
        ranked = ranked.withColumn("_seen", F.lit(None).cast("boolean"))
    row_class = (
        F.when(F.col("dropped"), F.lit(REJECTED))
        .when((F.col("_rank") > 1) | F.col("_seen").isNotNull(), F.lit(DUPLICATE))
        .otherwise(F.lit(NEW))
    )
    return ranked.withColumn("row_class", row_class).drop("_rank", "_seen")
