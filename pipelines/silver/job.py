"""Silver job: Delta stream from bronze -> validated, deduplicated trades in Delta silver,
rejected frames in Delta quarantine, both mirrored to PostgreSQL (see ``batch``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamReader, StreamingQuery

from cryptoflow.config import Settings
from pipelines.bronze.job import ensure_bronze_table
from pipelines.ledger import query_id_reader
from pipelines.log_checkpoints import checkpoint_in_background
from pipelines.ops.batches import attach_recorder
from pipelines.ops.checkpoints import ensure_checkpoint_owner, job_io
from pipelines.silver.batch import SilverBatch
from pipelines.silver.tables import ensure_tables
from pipelines.silver.transform import parse_frames
from pipelines.silver.validate import Rule, apply_rules, check_rules

log = logging.getLogger(__name__)


def validated(bronze: DataFrame, rules: Sequence[Rule]) -> DataFrame:
    """Bronze rows parsed and validated: what ``SilverBatch`` receives. Built on the
    streaming DataFrame, so the plan is analysed once per query start."""
    parsed = parse_frames(bronze)
    check_rules(rules, parsed)
    return apply_rules(parsed, rules)


def bronze_stream(reader: DataStreamReader, settings: Settings) -> DataFrame:
    """Bronze as silver's streaming source, with its per-batch limits (the live job and a
    partial replay read it the same way)."""
    return (
        reader.option("maxFilesPerTrigger", settings.max_files_per_trigger)
        .option("maxBytesPerTrigger", settings.max_bytes_per_trigger)
        .load(settings.table_path("bronze"))
    )


def start(
    spark: SparkSession,
    settings: Settings,
    available_now: bool = False,
    rules: Sequence[Rule] | None = None,
    unique_rule: Rule | None = None,
) -> StreamingQuery:
    """Start the silver query. Rules default to the expectation suite's
    (``expectations.rules``); tests may pass their own. The ``SilverBatch`` handling each
    micro-batch is reachable as ``query.silver`` for its statistics."""
    if rules is None or unique_rule is None:
        from expectations.rules import trade_rules, unique_key_rule

        rules = trade_rules(settings) if rules is None else rules
        unique_rule = unique_key_rule(settings) if unique_rule is None else unique_rule
    bronze_path = settings.table_path("bronze")
    ensure_bronze_table(spark, bronze_path)
    ensure_tables(spark, settings.table_path("silver"), settings.table_path("quarantine"))
    checkpoint_in_background(
        spark, settings, settings.table_path("silver"), settings.table_path("quarantine")
    )
    evaluated = validated(bronze_stream(spark.readStream.format("delta"), settings), rules)
    ensure_checkpoint_owner(settings, "silver", *job_io(settings, "silver"))  # ops hook
    attach_recorder(spark, settings)  # ops hook: pipeline_batches rows
    checkpoint = settings.checkpoint_path("silver")
    handler = SilverBatch(settings, rules, unique_rule, query_id_reader(checkpoint))
    writer = (
        evaluated.writeStream.queryName("silver")
        .foreachBatch(handler)
        .option("checkpointLocation", checkpoint)
    )
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{settings.trigger_interval_ms} milliseconds")
    query = writer.start()
    query.silver = handler  # type: ignore[attr-defined]
    log.info(
        "silver started bronze=%s silver=%s rules=%d",
        bronze_path,
        settings.table_path("silver"),
        len(rules),
    )
    return query
