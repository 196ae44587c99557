"""Bronze job: Kafka topic of raw frames -> Delta bronze, append-only and lossless.

Exactly once: the Kafka offsets of a micro-batch are in the checkpoint before it runs, and
its Delta commit names the query and batch (``pipelines.ledger``). A batch replayed after a
crash finds its commit and is skipped, so no record is written twice and none is skipped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from cryptoflow.config import Settings
from pipelines.bronze.transform import BRONZE_SCHEMA, stamp, to_bronze
from pipelines.ledger import CommitLedger, query_id_reader
from pipelines.log_checkpoints import NO_INLINE_CHECKPOINTS, checkpoint_in_background
from pipelines.ops.batches import attach_recorder
from pipelines.ops.checkpoints import ensure_checkpoint_owner, job_io

log = logging.getLogger(__name__)


def kafka_options(s: Settings) -> dict[str, str]:
    """Options of the Kafka source (see docs/pipelines.md for ``failOnDataLoss``)."""
    opts = {
        "kafka.bootstrap.servers": s.bootstrap_servers,
        "subscribe": s.kafka_topic,
        "startingOffsets": s.starting_offsets,
        "failOnDataLoss": "true" if s.fail_on_data_loss else "false",
        "includeHeaders": "true",
    }
    if s.max_offsets_per_trigger > 0:
        opts["maxOffsetsPerTrigger"] = str(s.max_offsets_per_trigger)
    return opts


def ensure_bronze_table(spark: SparkSession, path: str) -> None:
    """Create the bronze table if missing, so silver can start before bronze's first batch."""
    (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(BRONZE_SCHEMA)
        .partitionedBy("ingest_date")
        .property(*NO_INLINE_CHECKPOINTS)
        .execute()
    )


class BronzeBatch:
    """The ``foreachBatch`` function of bronze: append the batch's records once, stamped
    with the time of the write."""

    def __init__(self, path: str, ledger: CommitLedger) -> None:
        self.path = path
        self.ledger = ledger

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        self.ledger.append(stamp(records, datetime.now(UTC)), self.path, batch_id)


def start(spark: SparkSession, settings: Settings, available_now: bool = False) -> StreamingQuery:
    """Start the bronze query; ``available_now`` drains what Kafka holds now, then stops."""
    ensure_bronze_table(spark, settings.table_path("bronze"))
    checkpoint_in_background(spark, settings, settings.table_path("bronze"))
    ensure_checkpoint_owner(settings, "bronze", *job_io(settings, "bronze"))  # ops hook
    attach_recorder(spark, settings)  # ops hook: pipeline_batches rows
    reader = spark.readStream.format("kafka")
    for key, value in kafka_options(settings).items():
        reader = reader.option(key, value)
    checkpoint = settings.checkpoint_path("bronze")
    handler = BronzeBatch(settings.table_path("bronze"), CommitLedger(query_id_reader(checkpoint)))
    writer = (
        to_bronze(reader.load())
        # output_rows of pipeline_batches (a foreachBatch sink reports none)
        .observe("bronze", F.count(F.lit(1)).alias("output_rows"))
        .writeStream.queryName("bronze")
        .foreachBatch(handler)
        .option("checkpointLocation", checkpoint)
    )
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{settings.trigger_interval_ms} milliseconds")
    query = writer.start()
    log.info(
        "bronze started topic=%s table=%s starting_offsets=%s",
        settings.kafka_topic,
        settings.table_path("bronze"),
        settings.starting_offsets,
    )
    return query
