"""The pipeline's one streaming query: Kafka -> (bronze, silver, gold) -> PostgreSQL.

``start`` reads the topic, parses and validates each record in the streaming plan and hands
every micro-batch to ``PipelineBatch`` (``pipelines.batch``), which serves it to PostgreSQL
in one transaction and appends it to the Delta tables. Delta gold follows beside the batches
(``pipelines.gold.sync``). One checkpoint (``checkpoint_path(QUERY)``): running again
resumes where it stopped, without losing or repeating a record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import cast

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import first_line
from cryptoflow.core.services import kafka
from cryptoflow.core.services.postgres import pipeline_dsn
from cryptoflow.core.streams import TRADE
from expectations.rules import row_rules, unique_key_rule
from pipelines.batch import KindPlan, PipelineBatch
from pipelines.bronze.source import ensure_bronze_table, kafka_stream
from pipelines.gold.copy import COPIED, TableCopies, ensure_candle_tables, table_copies
from pipelines.gold.sync import GoldSync, ensure_gold_table
from pipelines.gold.transform import window_lengths
from pipelines.ledger import query_id_reader
from pipelines.log_checkpoints import checkpoint_in_background
from pipelines.ops.batches import attach_recorder
from pipelines.ops.checkpoints import ensure_checkpoint_owner, job_io
from pipelines.progress import SPARK_55271, stop_between_batches
from pipelines.silver.tables import ensure_silver_table, ensure_tables
from pipelines.silver.validate import Rule, validated

log = logging.getLogger(__name__)

#: The query's name: its checkpoint, its ``pipeline_batches`` rows, its status line.
QUERY = "trades"


class PipelineQuery(StreamingQuery):
    """What ``start`` returns, for the type checker: PySpark's own ``StreamingQuery`` object
    (not an instance of this class) with the batch function and the gold copier set on it."""

    handler: PipelineBatch  # the foreachBatch function: its ``stats``
    gold: GoldCopies  # the copiers of folded windows, candles and reconciliation into Delta


class GoldCopies:
    """The Delta copies of what the batches fold in PostgreSQL, beside the batches: gold
    windows (``GoldSync``) and candles and reconciliation (``TableCopies``), started and
    stopped together."""

    def __init__(self, windows: GoldSync, tables: TableCopies) -> None:
        self.windows, self.tables = windows, tables

    def start(self) -> GoldCopies:
        self.windows.start()
        self.tables.start()
        return self

    def stop(self, final: bool = True) -> None:
        """Stop the rounds; ``final``: copy what is left first."""
        try:
            self.windows.stop(final)
        finally:
            self.tables.stop(final)


def ensure_lake(spark: SparkSession, settings: Settings) -> None:
    """Create the Delta tables that are missing (bronze, each chosen kind's silver,
    quarantine, gold); their log checkpoints come from the checkpointer thread
    (``pipelines.log_checkpoints``)."""
    paths = [settings.table_path(t) for t in ("bronze", "silver", "quarantine", "gold")]
    ensure_bronze_table(spark, paths[0])
    ensure_tables(spark, paths[1], paths[2])
    ensure_gold_table(spark, paths[3])
    ensure_candle_tables(spark, settings)
    paths += [settings.table_path(t.name) for t in COPIED]
    others = [k for k in settings.stream_kinds if k is not TRADE]
    for kind in others:
        ensure_silver_table(spark, kind, settings.table_path(kind.entity.lake))
    checkpoint_in_background(
        spark, settings, *paths, *(settings.table_path(k.entity.lake) for k in others)
    )


def kind_plans(
    settings: Settings, rules: Sequence[Rule] | None = None, unique_rule: Rule | None = None
) -> list[KindPlan]:
    """The batch function's plan of every chosen stream kind, trades first, with the rules of
    their expectation suites (``rules``/``unique_rule``: trades' own, for tests)."""
    plans = []
    for kind in settings.stream_kinds:
        suite = kind.entity.suite
        kind_rules: list[Rule] = list(row_rules(settings, suite))
        unique: Rule = unique_key_rule(settings, suite)
        if kind is TRADE:
            kind_rules = kind_rules if rules is None else list(rules)
            unique = unique if unique_rule is None else unique_rule
        path = settings.table_path(kind.entity.lake)
        plans.append(KindPlan.of(kind, kind_rules, unique, path))
    return plans


def validated_records(
    source: DataFrame, settings: Settings, plans: Sequence[KindPlan]
) -> DataFrame:
    """``source`` (bronze rows of every chosen kind's topic) parsed as the kind of their topic
    and validated by its rules, in one partition per core: what ``PipelineBatch`` receives.

    The parse and validation projections are interpreted per partition (JSON parsing and
    higher-order functions keep them out of whole-stage code), and each partition generates
    their code anew: coalesced first, a batch of four kinds generates it twice, not once per
    topic-partition (twelve times), and runs two tasks, not twelve."""
    kinds = {settings.topic(p.kind): p.kind for p in plans}
    cores = source.sparkSession.sparkContext.defaultParallelism
    return validated(source.coalesce(cores), {p.kind.name: p.rules for p in plans}, kinds)


def gold_sync(spark: SparkSession, settings: Settings) -> GoldCopies:
    """The copiers of this lake's folded windows, candles and reconciliation into Delta
    (not started)."""
    interval_s = settings.gold_sync_interval_ms / 1000
    windows = GoldSync(spark, settings.table_path("gold"), pipeline_dsn(settings), interval_s)
    return GoldCopies(windows, table_copies(spark, settings))


def run_batches(
    source: DataFrame,
    handler: PipelineBatch,
    checkpoint: str,
    name: str,
    available_now: bool,
    trigger_interval_ms: int,
) -> StreamingQuery:
    """Start ``source`` (validated records) through ``handler`` under ``checkpoint``."""
    writer = (
        source.writeStream.queryName(name)
        .foreachBatch(handler)
        .option("checkpointLocation", checkpoint)
    )
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{trigger_interval_ms} milliseconds")
    query = writer.start()
    query.handler = handler  # type: ignore[attr-defined]  # read back through PipelineQuery
    return query


def start(
    spark: SparkSession,
    settings: Settings,
    available_now: bool = False,
    rules: Sequence[Rule] | None = None,
    unique_rule: Rule | None = None,
) -> PipelineQuery:
    """Start the query (``available_now``: what Kafka holds now, then stop). Rules default
    to the expectation suite's (``expectations.rules``); tests may pass their own. The
    batch function is ``query.handler`` (its ``stats``), the gold copier ``query.gold``:
    call ``query.gold.stop()`` after the query stops to bring Delta gold up to date."""
    plans = kind_plans(settings, rules, unique_rule)
    kafka.ensure_topics(settings)  # Spark's Kafka source fails on a topic that is missing
    ensure_lake(spark, settings)
    ensure_checkpoint_owner(settings, QUERY, *job_io(settings, QUERY))  # ops hook
    attach_recorder(spark, settings)  # ops hook: pipeline_batches rows
    checkpoint = settings.checkpoint_path(QUERY)
    handler = PipelineBatch(settings, plans, query_id_reader(checkpoint), QUERY)
    source = validated_records(kafka_stream(spark, settings), settings, plans)
    gold = gold_sync(spark, settings)
    query = cast(
        PipelineQuery,
        run_batches(
            source, handler, checkpoint, QUERY, available_now, settings.trigger_interval_ms
        ),
    )
    query.gold = gold if available_now else gold.start()
    log.info(
        "%s started topics=%s bronze=%s windows=%s watermark_s=%d rules=%d",
        QUERY,
        ",".join(settings.topics),
        settings.table_path("bronze"),
        ",".join(f"{s}s" for s in window_lengths(settings.window_seconds)),
        settings.watermark_seconds,
        sum(len(p.rules) for p in plans),
    )
    return query


def stop(query: PipelineQuery, timeout_s: float = 30.0) -> None:
    """Stop ``query`` between micro-batches, then bring Delta gold up to date (best effort:
    a failure is logged, and the next start's copier catches up)."""

    stop_between_batches([query], timeout_s)
    try:
        query.gold.stop()
    except Exception as e:  # noqa: BLE001 - stopping anyway; nothing is lost
        log.warning("gold not brought up to date on stop: %s", first_line(e))


def hit_spark_55271(query: StreamingQuery) -> bool:
    """True when ``query`` failed with SPARK-55271 before any batch: start it again."""
    err = query.exception()
    return err is not None and SPARK_55271 in str(err) and not query.recentProgress


def drain(
    spark: SparkSession, settings: Settings, should_stop: Callable[[], bool] = lambda: False
) -> PipelineQuery:
    """Process what Kafka holds now, bring Delta gold up to date, and return the finished
    query (raises its error; restarts once after SPARK-55271, as ``cryptoflow run`` does).
    ``should_stop`` ends the wait early (Ctrl-C)."""
    for attempt in (1, 2):
        query = start(spark, settings, available_now=True)
        while query.isActive and not should_stop():
            time.sleep(0.2)
        if attempt == 1 and not query.isActive and hit_spark_55271(query):
            log.warning("%s hit SPARK-55271 on its first batch: restarting", QUERY)
            query.gold.stop(final=False)
            continue
        break
    stop(query)
    err = query.exception()
    if err is not None:
        raise err
    return query
