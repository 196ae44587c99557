"""The one micro-batch (``foreachBatch``) from Kafka to PostgreSQL and the lake.

A batch's records arrive parsed and validated (``pipelines.job``: the streaming plan) and are
read from Kafka once (cached). Then, in this order (the crash argument is in
docs/pipelines.md):
1. the rows are collected through Arrow and deduplicated on (symbol, trade_id) against
   Delta silver as of the version before the batch (``pipelines.silver.dedup``);
2. Delta bronze: every record appended, tagged with the query and batch
   (``pipelines.ledger``), in a thread beside steps 3-4 (not on a rebuild from bronze);
3. PostgreSQL, one transaction (``pipelines.serve``): raw_trades, the metrics folded from
   the trades it inserted, quarantine, and the batch ledger;
4. Delta silver append of the new trades, Delta quarantine append of the rejected records,
   each tagged like bronze.
Rows are a function of the batch's records, its timestamp (kept in the offset log) and silver
as of the version before the batch. A replay (a crash anywhere before Spark's commit log
records the batch) finds its own silver commit if it made one, classifies against the
version before it, and so recomputes identical rows; every write then no-ops or is skipped
by its ledger. Delta gold is copied from the folded windows beside the batches
(``pipelines.gold.sync``).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.errors import CryptoflowError
from cryptoflow.core.services.postgres import pipeline_dsn
from pipelines.bronze.transform import bronze_rows
from pipelines.gold.fold import micros
from pipelines.gold.transform import window_lengths
from pipelines.latency import LatencyWindow
from pipelines.ledger import CommitLedger, created_empty
from pipelines.ops.batches import latency_percentiles, record_batch
from pipelines.serve import Served, serve_batch
from pipelines.silver.dedup import DUPLICATE, NEW, KeyIndex, classify, new_keys
from pipelines.silver.tables import (
    QUARANTINE_SCHEMA,
    key_index,
    keys_in_silver,
    table_version,
)
from pipelines.silver.transform import SILVER_COLUMNS
from pipelines.silver.validate import Rule

log = logging.getLogger(__name__)
_QUARANTINE_COLUMNS = QUARANTINE_SCHEMA.fieldNames()


class ExpectationFailed(CryptoflowError):
    """A rule with action ``fail`` rejected a row: the query stops."""


@dataclass
class BatchStats:
    """Numbers of the latest batch and running totals, for status lines and tests."""

    batches: int = 0
    last_batch_id: int = -1
    input_rows: int = 0
    output_rows: int = 0
    quarantined: int = 0
    late: int = 0
    duration_s: float = 0.0
    latency_p50_ms: float | None = None
    total_output: int = 0
    total_quarantined: int = 0
    warned: dict[str, int] | None = None
    recent: LatencyWindow = field(default_factory=LatencyWindow)  # p50/p99 of the last minute


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


class PipelineBatch:
    """The ``foreachBatch`` function of the pipeline's query (one instance per query start).

    It receives records already parsed and validated (``parse_frames`` and ``apply_rules``
    are part of the streaming plan, so they are planned once per query start and
    ``spark_time`` is the micro-batch's timestamp). ``write_bronze=False`` when the records
    come from bronze itself (a rebuild)."""

    def __init__(
        self,
        settings: Settings,
        rules: Sequence[Rule],
        unique_rule: Rule,
        app_id: Callable[[SparkSession], str],
        job: str,
        write_bronze: bool = True,
    ) -> None:
        self.settings = settings
        self.rules = list(rules)
        self.unique_rule = unique_rule
        self.job = job
        self.write_bronze = write_bronze
        self.lengths = window_lengths(settings.window_seconds)
        self._ledger = CommitLedger(app_id)
        self._bronze_ledger = CommitLedger(app_id)  # its own: the bronze thread uses it
        self._index: KeyIndex | None = None  # silver's keys as of its latest commit
        self._high_water_us: int | None = None  # newest trade time of the earlier batches
        self._collect = _collected_columns()
        self._bronze_writer = ThreadPoolExecutor(1, thread_name_prefix="bronze-write")
        self.stats = BatchStats()

    def __call__(self, evaluated: DataFrame, batch_id: int) -> None:
        t0 = time.monotonic()
        steps = _Steps()
        spark = evaluated.sparkSession
        before = self._silver_before(spark, batch_id)
        app = self._ledger.app(spark)
        if self._high_water_us is None:  # before this batch's fold moves it
            self._high_water_us = newest_folded_trade_us(
                pipeline_dsn(self.settings), self.settings.table_path("gold")
            )
        steps.mark("ledger")
        evaluated = evaluated.persist()
        bronze: Future | None = None
        try:
            # Arrow: ~10x faster than collecting Rows, and the new trades go to Postgres as
            # Arrow-written CSV without becoming Python objects. This reads Kafka (once).
            table = evaluated.select(*self._collect).toArrow()
            steps.mark("read")
            if self.write_bronze:  # from the cache, beside the serving path
                bronze = self._bronze_writer.submit(self._append_bronze, evaluated, batch_id)
            batch = self._classify(spark, evaluated, table, before)
            steps.mark("dedup")
            served = serve_batch(
                pipeline_dsn(self.settings), app, batch_id, batch.trades, batch.quarantined,
                self.settings.table_path("gold"), self.lengths,
                self.settings.mirror_retry_seconds,
            )  # fmt: skip
            steps.mark("postgres")
            self._append_silver(spark, evaluated, batch, batch_id, steps)
            if bronze is not None:
                bronze.result()
                steps.mark("bronze")
            late = self._late(batch.trades)
            self._record(app, batch_id, table, batch, served, late, time.monotonic() - t0, steps)
        finally:
            if bronze is not None and not bronze.done():
                bronze.exception()  # never leave the cache to a write still reading it
            evaluated.unpersist()

    def _classify(
        self, spark: SparkSession, evaluated: DataFrame, table: pa.Table, before: int
    ) -> _Classified:
        """Deduplicate the collected rows against silver at ``before``; stop on a ``fail``
        rule; the new trades and the quarantine rows of everything else."""
        rows = _candidates(table)
        assert self._index is not None  # _silver_before set it for this batch
        classes = classify(rows, self._index, self._lookup(spark, before))
        self._stop_on_failures(table, rows, classes)
        trades = table.filter(pa.array([c == NEW for c in classes], pa.bool_()))
        duplicates = [r for r, c in zip(rows, classes, strict=True) if c == DUPLICATE]
        positions = _positions(spark, duplicates) if duplicates else None
        raw = _raw_values(evaluated, positions)
        others = [i for i, c in enumerate(classes) if c != NEW]
        quarantined = [
            self._quarantine_row(r, classes[i], raw)
            for i, r in zip(
                others, table.take(pa.array(others, pa.int64())).to_pylist(), strict=True
            )
        ]
        return _Classified(rows, classes, trades, positions, quarantined)

    def _append_silver(
        self,
        spark: SparkSession,
        evaluated: DataFrame,
        batch: _Classified,
        batch_id: int,
        steps: _Steps,
    ) -> None:
        """Append the new trades to Delta silver and the rejected records to quarantine,
        each once (the ledger), then move the key index to silver's new version."""
        silver_path = self.settings.table_path("silver")
        self._ledger.append(_new_rows(evaluated, batch.positions), silver_path, batch_id)
        steps.mark("silver")
        if batch.quarantined:
            q = spark.createDataFrame(batch.quarantined, QUARANTINE_SCHEMA)
            self._ledger.append(q, self.settings.table_path("quarantine"), batch_id)
            steps.mark("quarantine")
        # Our commit is the latest (a replay's skipped write: the one it made before).
        keys = new_keys(batch.rows, batch.classes).items()
        assert self._index is not None  # _silver_before set it for this batch
        self._index.advance(table_version(spark, silver_path), keys)

    def _append_bronze(self, evaluated: DataFrame, batch_id: int) -> None:
        """Every record of the batch into Delta bronze, once (runs in the bronze thread)."""
        rows = bronze_rows(evaluated, datetime.now(UTC))
        self._bronze_ledger.append(rows, self.settings.table_path("bronze"), batch_id)

    def _silver_before(self, spark: SparkSession, batch_id: int) -> int:
        """The silver version this batch classifies against, with ``self._index`` at it.

        Right after a (re)start the batch may be a replay that already committed: then it is
        the version before that commit, so the replay classifies like the first attempt."""
        path = self.settings.table_path("silver")
        if self._index is None:
            committed = self._ledger.committed(spark, path, batch_id)
            before = table_version(spark, path) if committed is None else committed - 1
            if before == 0 and created_empty(spark, path):  # a fresh lake: no key, no scan
                self._index = KeyIndex(before)
            else:
                self._index = key_index(spark, path, before)
            return before
        latest = table_version(spark, path)
        if latest != self._index.version:  # another writer committed to silver
            log.info("silver has commits from outside the job (version %d, expected %d): "
                     "rebuilding its key index", latest, self._index.version)  # fmt: skip
            self._index = key_index(spark, path, latest)
        return latest

    def _lookup(self, spark: SparkSession, before: int):
        """``classify``'s lookup: the keys silver holds at ``before``, read by key."""
        path = self.settings.table_path("silver")
        return lambda keys: keys_in_silver(spark, path, before, keys)

    def _late(self, trades: pa.Table) -> int:
        """New trades older than the watermark (newest trade time of the earlier batches
        minus ``watermark_seconds``): counted, and folded into their windows like any."""
        if not trades.num_rows:
            return 0
        times = pc.cast(trades.column("trade_time"), pa.int64())
        assert self._high_water_us is not None  # __call__ reads it before the first batch
        watermark = self._high_water_us - self.settings.watermark_seconds * 1_000_000
        late = pc.sum(pc.less(times, watermark)).as_py() or 0
        self._high_water_us = max(self._high_water_us, pc.max(times).as_py())
        return late

    # ----- steps
    def _stop_on_failures(self, table: pa.Table, rows: list[Keyed], classes: list[str]) -> None:
        """Raise for the first row (by Kafka position) that a ``fail`` rule rejected."""
        fail_rules = table.column("fail_rule").to_pylist()
        failing = [i for i, rule in enumerate(fail_rules) if rule is not None]
        if self.unique_rule.action == "fail":
            failing += [i for i, c in enumerate(classes) if c == DUPLICATE]
        if not failing:
            return
        i = min(failing, key=lambda i: (rows[i].kafka_partition, rows[i].kafka_offset))
        rule = fail_rules[i] or self.unique_rule.name
        raise ExpectationFailed(
            f"expectation {rule} (action fail) rejected the record at "
            f"{table.column('topic')[i].as_py()}/{rows[i].kafka_partition}/"
            f"{rows[i].kafka_offset}: the pipeline stops; fix the input or change the rule's "
            "action to drop or warn in the expectation suite"
        )

    def _quarantine_row(
        self, r: dict[str, Any], row_class: str, raw: dict[tuple[int, int], bytes]
    ) -> tuple:
        if row_class == DUPLICATE:
            reasons = [self.unique_rule.name]
            value = raw[(r["kafka_partition"], r["kafka_offset"])]
        else:
            reasons, value = list(r["failed_expectations"]), r["raw_value"]
        special = {
            "failed_expectations": reasons,
            "raw_value": value,
            "quarantined_at": r["spark_time"],
        }
        return tuple(special[c] if c in special else r[c] for c in _QUARANTINE_COLUMNS)

    def _record(
        self,
        app: str,
        batch_id: int,
        table: pa.Table,
        batch: _Classified,
        served: Served,
        late: int,
        dt: float,
        steps: _Steps,
    ) -> None:
        trades, quarantined = batch.trades, batch.quarantined
        names = pc.list_flatten(table.column("failed_expectations"))
        counts = {c["values"]: c["counts"] for c in pc.value_counts(names).to_pylist()}
        warn = {r.name for r in self.rules if r.action == "warn"}
        warned = {k: v for k, v in counts.items() if k in warn}
        failed = {k: v for k, v in counts.items() if k not in warn}
        latencies = trades.column("end_to_end_latency_ms").to_pylist()
        s = self.stats
        s.batches += 1
        s.last_batch_id, s.input_rows, s.output_rows = batch_id, table.num_rows, trades.num_rows
        s.quarantined, s.late, s.duration_s, s.warned = len(quarantined), late, dt, warned
        s.latency_p50_ms = statistics.median(latencies) if latencies else None
        s.recent.add(latencies)
        s.total_output += trades.num_rows
        s.total_quarantined += len(quarantined)
        record_batch(  # ops hook: the batch's own numbers in pipeline_batches (best effort)
            self.settings,
            self.job,
            batch_id,
            query_id=app,
            output_rows=trades.num_rows,
            quarantined=len(quarantined),
            late=late,
            **latency_percentiles(latencies),
        )
        log.info(
            "%s batch=%d input=%d output=%d quarantined=%d late=%d windows=%d duration_ms=%d "
            "e2e_p50_ms=%s failed=%s warned=%s steps_ms=%s%s",
            self.job,
            batch_id,
            table.num_rows,
            trades.num_rows,
            len(quarantined),
            late,
            len(served.windows),
            dt * 1000,
            "-" if s.latency_p50_ms is None else f"{s.latency_p50_ms:.0f}",
            json.dumps(failed, separators=(",", ":")),
            json.dumps(warned, separators=(",", ":")),
            steps,
            " postgres=already-applied" if served.replayed else "",
        )


def newest_folded_trade_us(dsn: str, lake: str) -> int:
    """The newest trade time folded into ``lake``'s windows (µs; 0 when none): where the
    watermark resumes after a restart."""
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT max(last_trade_time) FROM metric_sums WHERE lake = %s", (lake,))
            (newest,) = cur.fetchone()
    finally:
        conn.close()
    return 0 if newest is None else micros(newest)


def _collected_columns() -> list[Column]:
    """What the driver needs of each row: silver and quarantine columns and the verdict.
    The raw frame travels only for rejected rows (duplicates fetch theirs separately)."""
    names = dict.fromkeys([*SILVER_COLUMNS, *_QUARANTINE_COLUMNS, "dropped", "fail_rule"])
    del names["quarantined_at"]  # = spark_time
    return [
        F.when(F.col("dropped"), F.col(n)).alias(n) if n == "raw_value" else F.col(n) for n in names
    ]


class _Classified(NamedTuple):
    """A batch after deduplication (``PipelineBatch._classify``)."""

    rows: list[Keyed]
    classes: list[str]
    trades: pa.Table  # the new trades, silver's and raw_trades' rows
    positions: DataFrame | None  # Kafka positions of the duplicates (broadcast), if any
    quarantined: list[tuple]  # quarantine rows of the rejected records and duplicates


class Keyed(NamedTuple):
    """What deduplication reads of a collected row (``dedup.Candidate``)."""

    symbol: str | None
    trade_id: int | None
    dropped: bool
    kafka_partition: int
    kafka_offset: int


def _candidates(table: pa.Table) -> list[Keyed]:
    """The batch's rows as ``Keyed`` tuples, in table order."""
    columns = [table.column(name).to_pylist() for name in Keyed._fields]
    return [Keyed(*values) for values in zip(*columns, strict=True)]


def _positions(spark: SparkSession, rows: list[Keyed]) -> DataFrame:
    """The (partition, offset) of ``rows``, small enough to broadcast."""
    schema = "kafka_partition int, kafka_offset long"
    pairs = [(r.kafka_partition, r.kafka_offset) for r in rows]
    return F.broadcast(spark.createDataFrame(pairs, schema))


def _raw_values(evaluated: DataFrame, duplicates: DataFrame | None) -> dict[tuple[int, int], bytes]:
    """The raw frames of the rows at the ``duplicates`` positions, by (partition, offset)."""
    if duplicates is None:
        return {}
    found = evaluated.join(duplicates, ["kafka_partition", "kafka_offset"], "left_semi")
    rows = found.select("kafka_partition", "kafka_offset", "raw_value").collect()
    return {(r.kafka_partition, r.kafka_offset): r.raw_value for r in rows}


def _new_rows(evaluated: DataFrame, duplicates: DataFrame | None) -> DataFrame:
    """The batch's rows for silver: not rejected, and not at the ``duplicates`` positions."""
    kept = evaluated.where(~F.col("dropped"))
    if duplicates is not None:
        kept = kept.join(duplicates, ["kafka_partition", "kafka_offset"], "left_anti")
    return kept.select(*SILVER_COLUMNS)
