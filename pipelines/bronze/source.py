"""Bronze's two ends: the Kafka topic the pipeline reads, and the Delta table every record is
kept in, append-only and lossless. Everything downstream can be rebuilt from bronze
(``bronze_stream``)."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamReader

from cryptoflow.core.config import Settings
from pipelines.bronze.transform import BRONZE_SCHEMA, to_bronze
from pipelines.log_checkpoints import NO_INLINE_CHECKPOINTS, ensure_property


def kafka_options(s: Settings) -> dict[str, str]:
    """Options of the Kafka source (see docs/pipelines.md for ``failOnDataLoss``)."""
    opts = {
        "kafka.bootstrap.servers": s.bootstrap_servers,
        "subscribe": ",".join(s.topics),
        "startingOffsets": s.starting_offsets,
        "failOnDataLoss": "true" if s.fail_on_data_loss else "false",
        "includeHeaders": "true",
        "kafka.fetch.max.wait.ms": str(s.kafka_fetch_max_wait_ms),
    }
    if s.max_offsets_per_trigger > 0:
        opts["maxOffsetsPerTrigger"] = str(s.max_offsets_per_trigger)
    return opts


def kafka_stream(spark: SparkSession, settings: Settings) -> DataFrame:
    """The topics of the chosen stream kinds as a stream of bronze rows (``to_bronze``;
    ``bronze_time`` comes per batch)."""
    reader = spark.readStream.format("kafka")
    for key, value in kafka_options(settings).items():
        reader = reader.option(key, value)
    return to_bronze(reader.load())


def bronze_stream(reader: DataStreamReader, settings: Settings) -> DataFrame:
    """Bronze as a Delta stream, with the per-batch limits of a rebuild (``replay``)."""
    return (
        reader.option("maxFilesPerTrigger", settings.max_files_per_trigger)
        .option("maxBytesPerTrigger", settings.max_bytes_per_trigger)
        .load(settings.table_path("bronze"))
    )


#: Delta keeps per-file statistics of where a record came from and when, not of its bytes
#: or headers: statistics of every column cost each append's tasks their code.
BRONZE_STATS = ("delta.dataSkippingStatsColumns", "topic,partition,offset,kafka_timestamp")


def ensure_bronze_table(spark: SparkSession, path: str) -> None:
    """Create the bronze table (partitioned by ``ingest_date``) unless it exists; an existing
    one gets ``BRONZE_STATS``."""
    (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(BRONZE_SCHEMA)
        .partitionedBy("ingest_date")
        .property(*NO_INLINE_CHECKPOINTS)
        .property(*BRONZE_STATS)
        .execute()
    )
    ensure_property(spark, path, *BRONZE_STATS)
