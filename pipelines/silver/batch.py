"""One silver micro-batch (``foreachBatch``): parse, validate, deduplicate, write, mirror.

Order of writes (the idempotency argument is in docs/pipelines.md):
1. Delta silver append of the batch's new trades, tagged ``txnAppId=<query id>``,
   ``txnVersion=<batch id>`` and the batch's ``spark_time`` in ``userMetadata``;
2. Delta quarantine append of the batch's rejected records, tagged the same way (only
   when there are any);
3. one PostgreSQL transaction upserting raw_trades and quarantine.
A replay of the batch (crash anywhere before Spark's commit log records it) finds its own
silver commit, reuses its spark_time and the table version that preceded it, and so
recomputes identical rows; steps 1-3 then skip or no-op what already happened.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from cryptoflow.config import Settings
from cryptoflow.errors import CryptoflowError
from pipelines.ops.batches import latency_percentiles, record_batch
from pipelines.silver.dedup import DUPLICATE, NEW, REJECTED, classify
from pipelines.silver.mirror import mirror_to_postgres
from pipelines.silver.tables import (
    QUARANTINE_SCHEMA,
    batch_metadata,
    find_committed_batch,
    latest_version,
)
from pipelines.silver.transform import SILVER_COLUMNS, parse_frames
from pipelines.silver.validate import Rule, apply_rules

log = logging.getLogger(__name__)
_QUARANTINE_COLUMNS = QUARANTINE_SCHEMA.fieldNames()


class ExpectationFailed(CryptoflowError):
    """A rule with action ``fail`` rejected a row: the silver query stops."""


@dataclass
class SilverStats:
    """Numbers of the latest batch and running totals, for status lines and tests."""

    batches: int = 0
    last_batch_id: int = -1
    input_rows: int = 0
    output_rows: int = 0
    quarantined: int = 0
    duration_s: float = 0.0
    latency_p50_ms: float | None = None
    total_output: int = 0
    total_quarantined: int = 0
    warned: dict[str, int] | None = None


class _Steps:
    """Milliseconds spent per step of a batch, for the progress log."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self.ms: dict[str, int] = {}

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.ms[name] = int((now - self._last) * 1000)
        self._last = now

    def __str__(self) -> str:
        return ",".join(f"{k}:{v}" for k, v in self.ms.items())


def now_ms() -> datetime:
    """Current UTC time truncated to milliseconds (PostgreSQL keeps timestamptz(3))."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class SilverBatch:
    """The ``foreachBatch`` function of the silver query (one instance per query start)."""

    def __init__(
        self,
        settings: Settings,
        rules: Sequence[Rule],
        unique_rule: Rule,
        app_id: Callable[[SparkSession], str],
    ) -> None:
        self.settings = settings
        self.rules = list(rules)
        self.unique_rule = unique_rule
        self._app_id = app_id
        self._app: str | None = None
        self._first = True
        self.stats = SilverStats()

    def __call__(self, bronze: DataFrame, batch_id: int) -> None:
        t0 = time.monotonic()
        spark = bronze.sparkSession
        if self._app is None:
            self._app = self._app_id(spark)
        silver_path = self.settings.table_path("silver")
        committed = None
        if self._first:  # only a batch right after a (re)start can be a replay
            committed = find_committed_batch(spark, silver_path, self._app, batch_id)
            self._first = False
        spark_time = committed.spark_time if committed else now_ms()
        # Compare with silver as it was before this batch: pinned, so a re-evaluation after
        # our own write (or in a replay) classifies every row the same way.
        before = committed.version - 1 if committed else latest_version(spark, silver_path)
        evaluated = apply_rules(parse_frames(bronze, spark_time), self.rules).persist()
        steps = _Steps()
        classified = None
        try:
            dates = [
                r[0]
                for r in evaluated.where("NOT dropped").select("trade_date").distinct().collect()
            ]
            existing = None
            if dates and before >= 0:
                existing = (
                    spark.read.format("delta")
                    .option("versionAsOf", before)
                    .load(silver_path)
                    .where(F.col("trade_date").isin(dates))
                )
            classified = classify(evaluated, existing).persist()
            rows = classified.select(*_collected_columns(spark_time)).collect()
            steps.mark("validate")
            self._stop_on_failures(rows)
            trades = [r for r in rows if r.row_class == NEW]
            quarantined = [self._quarantine_row(r) for r in rows if r.row_class != NEW]
            tags = {
                "txnAppId": self._app,
                "txnVersion": batch_id,
                "userMetadata": batch_metadata(self._app, batch_id, spark_time),
            }
            new = classified.where(F.col("row_class") == NEW).select(*SILVER_COLUMNS)
            new.write.format("delta").mode("append").options(**tags).save(silver_path)
            steps.mark("silver")
            if quarantined:
                q = spark.createDataFrame(quarantined, QUARANTINE_SCHEMA)
                q.write.format("delta").mode("append").options(**tags).save(
                    self.settings.table_path("quarantine")
                )
                steps.mark("quarantine")
            mirror_to_postgres(
                self.settings,
                [tuple(r[c] for c in SILVER_COLUMNS[:-1]) for r in trades],
                quarantined,
                batch_id,
            )
            steps.mark("postgres")
            self._record(batch_id, rows, trades, len(quarantined), time.monotonic() - t0, steps)
        finally:
            evaluated.unpersist()
            if classified is not None:
                classified.unpersist()

    # ----- steps
    def _stop_on_failures(self, rows: list[Row]) -> None:
        """Raise for the first row (by Kafka position) that a ``fail`` rule rejected."""
        failing = [r for r in rows if r.fail_rule is not None]
        dup_fails = self.unique_rule.action == "fail"
        if dup_fails:
            failing += [r for r in rows if r.row_class == DUPLICATE]
        if not failing:
            return
        row = min(failing, key=lambda r: (r.kafka_partition, r.kafka_offset))
        rule = row.fail_rule or self.unique_rule.name
        raise ExpectationFailed(
            f"expectation {rule} (action fail) rejected the record at "
            f"{row.topic}/{row.kafka_partition}/{row.kafka_offset}: silver stops; fix the input "
            "or change the rule's action to drop or warn in the expectation suite"
        )

    def _quarantine_row(self, r: Row) -> tuple:
        reasons = list(r.failed_expectations) if r.row_class == REJECTED else []
        if r.row_class == DUPLICATE:
            reasons = [self.unique_rule.name]
        return tuple(reasons if c == "failed_expectations" else r[c] for c in _QUARANTINE_COLUMNS)

    def _record(
        self, batch_id: int, rows: list[Row], trades: list[Row], quarantined: int, dt: float, steps
    ) -> None:
        counts: dict[str, int] = {}
        for r in rows:
            for name in r.failed_expectations:
                counts[name] = counts.get(name, 0) + 1
        warn = {r.name for r in self.rules if r.action == "warn"}
        warned = {k: v for k, v in counts.items() if k in warn}
        failed = {k: v for k, v in counts.items() if k not in warn}
        latencies = [r.end_to_end_latency_ms for r in trades]
        s = self.stats
        s.batches += 1
        s.last_batch_id, s.input_rows, s.output_rows = batch_id, len(rows), len(trades)
        s.quarantined, s.duration_s, s.warned = quarantined, dt, warned
        s.latency_p50_ms = statistics.median(latencies) if latencies else None
        s.total_output += len(trades)
        s.total_quarantined += quarantined
        record_batch(  # ops hook: silver's own numbers in pipeline_batches (best effort)
            self.settings,
            "silver",
            batch_id,
            query_id=self._app,
            output_rows=len(trades),
            quarantined=quarantined,
            **latency_percentiles(latencies),
        )
        log.info(
            "silver batch=%d input=%d output=%d quarantined=%d duration_ms=%d e2e_p50_ms=%s "
            "failed=%s warned=%s steps_ms=%s",
            batch_id,
            len(rows),
            len(trades),
            quarantined,
            dt * 1000,
            "-" if s.latency_p50_ms is None else f"{s.latency_p50_ms:.0f}",
            json.dumps(failed, separators=(",", ":")),
            json.dumps(warned, separators=(",", ":")),
            steps,
        )


def _collected_columns(quarantined_at: datetime) -> list:
    """What the driver needs of each row: silver columns, quarantine columns, the verdict.
    The raw frame travels only for rows that go to quarantine."""
    names = dict.fromkeys([*SILVER_COLUMNS, *_QUARANTINE_COLUMNS, "fail_rule", "row_class"])
    cols = []
    for name in names:
        if name == "raw_value":
            cols.append(F.when(F.col("row_class") != NEW, F.col("raw_value")).alias(name))
        elif name == "quarantined_at":
            cols.append(F.lit(quarantined_at).cast("timestamp").alias(name))
        else:
            cols.append(F.col(name))
    return cols
