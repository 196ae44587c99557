"""The one micro-batch (``foreachBatch``) from Kafka to PostgreSQL and the lake.

A batch's records arrive parsed and validated (``pipelines.job``: the streaming plan) and are
read from Kafka once (cached). Then, in this order (the crash argument is in
docs/pipelines.md):
1. the rows are collected through Arrow; each stream kind's rows (``KindPlan``) are
   deduplicated on (symbol, record id) against its Delta silver table as of the version
   before the batch (``pipelines.silver.dedup``);
2. Delta bronze: every record appended, tagged with the query and batch
   (``pipelines.ledger``), in a thread beside steps 3-4 (not on a rebuild from bronze);
3. PostgreSQL, one transaction (``pipelines.serve``): raw_trades, the metrics folded from
   the trades it inserted, the other kinds' serving tables, quarantine, and the ledger;
4. Delta silver appends of each kind's new rows, Delta quarantine append of the rejected
   records, each tagged like bronze.
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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.errors import CryptoflowError
from cryptoflow.core.services.postgres import pipeline_dsn
from cryptoflow.core.streams import AGG_TRADE, KLINE_1M, StreamKind
from pipelines import batch_frames as frames
from pipelines.batch_tasks import (
    LIVE,
    SUMMARY_SCHEMA,
    Keyed,
    KindTask,
    ServeTask,
    Tally,
    candidates,
    counts,
    live_mask,
    nearest_rank,
    order_statistics,
    quarantine_row,
    serve_in_task,
    served_rows,
)
from pipelines.bronze.transform import bronze_rows
from pipelines.gold.candles import candle_intervals
from pipelines.gold.fold import micros
from pipelines.gold.transform import window_lengths
from pipelines.latency import LatencyWindow
from pipelines.ledger import CommitLedger, created_empty
from pipelines.ops.batches import record_batch
from pipelines.serve import Gold, serve_batch
from pipelines.serving import Rows, UpsertSpec
from pipelines.silver.dedup import DUPLICATE, REJECTED, KeyIndex, classify, new_keys
from pipelines.silver.tables import (
    QUARANTINE_SCHEMA,
    key_index,
    keys_in_silver,
    table_version,
    upsert_spec,
)
from pipelines.silver.transform import PARSE_COLUMNS
from pipelines.silver.validate import Rule
from pipelines.small_batches import for_appends, is_small, run_as

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
    small: bool = False  # the latest batch ran as a small one (pipelines.small_batches)
    latency_p50_ms: float | None = None
    total_output: int = 0
    total_quarantined: int = 0
    warned: dict[str, int] | None = None
    rows_by_kind: dict[str, int] = field(default_factory=dict)  # new rows per kind, in total
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


@dataclass(frozen=True)
class KindPlan:
    """One stream kind's part of the batch function: its rules, its silver table and its
    PostgreSQL table."""

    kind: StreamKind
    rules: list[Rule]
    unique_rule: Rule
    path: str
    spec: UpsertSpec

    @classmethod
    def of(
        cls, kind: StreamKind, rules: Sequence[Rule], unique_rule: Rule, lake_path: str
    ) -> KindPlan:
        """The plan of ``kind`` whose silver table is at ``lake_path``."""
        return cls(kind, list(rules), unique_rule, lake_path, upsert_spec(kind))


class PipelineBatch:
    """The ``foreachBatch`` function of the pipeline's query (one instance per query start).

    It receives records already parsed as the kind of their topic and validated
    (``parse_frames`` and ``apply_rules`` are part of the streaming plan, so they are
    planned once per query start and ``spark_time`` is the micro-batch's timestamp).
    ``plans``: one per stream kind, trades first (gold and the latency figures come from
    them). ``write_bronze=False`` when the records come from bronze itself (a rebuild)."""

    def __init__(
        self,
        settings: Settings,
        plans: Sequence[KindPlan],
        app_id: Callable[[SparkSession], str],
        job: str,
        write_bronze: bool = True,
    ) -> None:
        self.settings = settings
        self.plans = list(plans)
        self.trades = self.plans[0]
        self.job = job
        self.write_bronze = write_bronze
        self.in_executors = settings.batch_in_executors
        self._unique_rules = {p.kind.name: p.unique_rule.name for p in self.plans}
        self._unique_fail = [p.kind.name for p in self.plans if p.unique_rule.action == "fail"]
        kinds = {p.kind.name for p in self.plans}
        self.gold = Gold(
            settings.table_path("gold"),
            window_lengths(settings.window_seconds),
            candle_intervals(settings),
            reconcile_klines=KLINE_1M.name in kinds,
            check_aggregates=AGG_TRADE.name in kinds,
            watermark_seconds=settings.watermark_seconds,
        )
        self._ledger = CommitLedger(app_id)
        self._bronze_ledger = CommitLedger(app_id)  # its own: the bronze thread uses it
        # One per silver table: the other kinds' appends run in threads beside trades'.
        self._silver_ledgers = {p.kind.name: CommitLedger(app_id) for p in self.plans}
        self._high_water_us: int | None = None  # newest trade time of the earlier batches
        self._index: dict[str, KeyIndex] = {}  # per kind: silver's keys as of its latest commit
        self._collect = _collected_columns(self.plans)
        self._bronze_writer = ThreadPoolExecutor(1, thread_name_prefix="bronze-write")
        self._silver_writer = ThreadPoolExecutor(
            max(1, len(self.plans) - 1), thread_name_prefix="silver-write"
        )
        self.stats = BatchStats()

    def __call__(self, evaluated: DataFrame, batch_id: int) -> None:
        t0 = time.monotonic()
        steps = _Steps()
        spark = evaluated.sparkSession
        previous = self.stats.input_rows if self.stats.batches else None
        # Measured on one machine; in the executor placement it slowed the batches.
        small = is_small(previous, self.settings.small_batch_rows)
        self.stats.small = small and not self.in_executors
        run_as(spark, self.stats.small)
        before = {p.kind.name: self._silver_before(spark, p, batch_id) for p in self.plans}
        app = self._ledger.app(spark)
        if self._high_water_us is None:  # before this batch's fold moves it
            self._high_water_us = newest_folded_trade_us(
                pipeline_dsn(self.settings), self.settings.table_path("gold")
            )
        steps.mark("ledger")
        run = self._in_executors if self.in_executors else self._in_driver
        tally = run(spark, evaluated, batch_id, before, app, steps)
        self._record(app, batch_id, tally, time.monotonic() - t0, steps)

    def _in_driver(
        self,
        spark: SparkSession,
        evaluated: DataFrame,
        batch_id: int,
        before: dict[str, int],
        app: str,
        steps: _Steps,
    ) -> Tally:
        """The batch collected into the driver's Python through Arrow: one Spark job to read
        it, the fewest on one machine (``CRYPTOFLOW_BATCH_PLACEMENT=driver``)."""
        # One task per core has read every topic-partition of the batch
        # (``pipelines.job.validated_records``): with four stream kinds a batch spans up to
        # 4 x CRYPTOFLOW_KAFKA_PARTITIONS partitions, and a task each (and a file each in
        # every Delta append) cost more than the records in them.
        evaluated = _kept(evaluated)
        bronze: Future | None = None
        writes: list[Future] = []
        try:
            # Arrow: ~10x faster than collecting Rows, and the new rows go to Postgres as
            # Arrow-written CSV without becoming Python objects. This reads Kafka (once).
            table = evaluated.select(*self._collect).toArrow()
            steps.mark("read")
            appended = for_appends(evaluated, self.stats.small)
            if self.write_bronze:  # from the cache, beside the serving path
                bronze = self._bronze_writer.submit(self._append_bronze, appended, batch_id)
            parts = {
                p.kind.name: self._classify(spark, evaluated, table, p, before[p.kind.name])
                for p in self.plans
            }
            quarantined = [q for part in parts.values() for q in part.quarantined]
            quarantined += _unread_rows(table)
            steps.mark("dedup")
            trades = parts[self.trades.kind.name]
            served = serve_batch(
                pipeline_dsn(self.settings), app, batch_id, trades.new,
                quarantined, self.gold, self.settings.mirror_retry_seconds,
                [(p.spec, parts[p.kind.name].served) for p in self.plans[1:]],
            )  # fmt: skip
            steps.mark("postgres")
            # Each Delta commit waits more than it computes: the other kinds' silver appends
            # run in threads beside trades', the bronze append in its own.
            writes = [
                self._silver_writer.submit(
                    self._append_silver, spark, appended, plan, parts[plan.kind.name], batch_id
                )
                for plan in self.plans[1:]
            ]
            self._append_silver(spark, appended, self.trades, trades, batch_id)
            steps.mark("silver")
            if quarantined:
                q = spark.createDataFrame(quarantined, QUARANTINE_SCHEMA)
                self._ledger.append(q, self.settings.table_path("quarantine"), batch_id)
                steps.mark("quarantine")
            for write in writes:
                write.result()
            steps.mark("kinds")
            if bronze is not None:
                bronze.result()
                steps.mark("bronze")
            return Tally(
                input_rows=table.num_rows,
                new_rows={name: part.new.num_rows for name, part in parts.items()},
                quarantined=len(quarantined),
                failed=counts(pc.list_flatten(table.column("failed_expectations"))),
                latencies=counts(trades.new.column("end_to_end_latency_ms")),
                windows=len(served.windows),
                reconciled=served.reconciled,
                replayed=served.replayed,
                late=self._late(trades.new),
            )
        finally:
            _finish(evaluated, pending=[*writes, *([bronze] if bronze is not None else [])])

    def _in_executors(
        self,
        spark: SparkSession,
        evaluated: DataFrame,
        batch_id: int,
        before: dict[str, int],
        app: str,
        steps: _Steps,
    ) -> Tally:
        """The batch's per-row work in executor tasks, one per symbol partition
        (``pipelines.batch_tasks``, ``pipelines.batch_frames``); the driver plans, commits
        Delta and merges one summary row per partition (``CRYPTOFLOW_BATCH_PLACEMENT``)."""
        high_water = self._high_water_us
        assert high_water is not None  # __call__ reads it before the first batch
        kinds = [
            KindTask(p.kind, p.unique_rule.name, dict(self._index[p.kind.name].high))
            for p in self.plans
        ]
        partitions = self.settings.spark_shuffle_partitions
        classified = _kept(frames.classified_frame(evaluated, kinds, partitions))
        stored = [classified]
        bronze: Future | None = None
        writes: list[Future] = []
        try:
            # One small job: reads Kafka, classifies in the tasks, keeps the rows.
            checks = frames.checks(classified, self._unique_rules, self._unique_fail)
            steps.mark("classify")
            if self.write_bronze:
                bronze = self._bronze_writer.submit(self._append_bronze, classified, batch_id)
            self._stop_at(frames.first_failed(checks))
            rows = self._looked_up(spark, classified, checks, before)
            if rows is not classified:
                stored.append(rows)
                if self._unique_fail:
                    self._stop_at(frames.first_looked_up(rows, self._unique_rules,
                                                         self._unique_fail))  # fmt: skip
            steps.mark("lookup")
            task = ServeTask(
                pipeline_dsn(self.settings), app, batch_id, self.gold,
                self.settings.mirror_retry_seconds, kinds[0],
                [(k, p.spec) for k, p in zip(kinds[1:], self.plans[1:], strict=True)],
                high_water - self.settings.watermark_seconds * 1_000_000,
            )  # fmt: skip
            summaries = rows.mapInArrow(partial(serve_in_task, task=task), SUMMARY_SCHEMA)
            tally = Tally.of(summaries.collect())
            steps.mark("postgres")
            writes = [
                self._silver_writer.submit(self._commit_silver, rows, p, tally, batch_id)
                for p in self.plans[1:]
            ]
            self._commit_silver(rows, self.trades, tally, batch_id)
            steps.mark("silver")
            if tally.quarantined:
                q = frames.quarantine_frame(rows, self._unique_rules)
                self._ledger.append(q, self.settings.table_path("quarantine"), batch_id)
                steps.mark("quarantine")
            for write in writes:
                write.result()
            steps.mark("kinds")
            if bronze is not None:
                bronze.result()
                steps.mark("bronze")
            if tally.newest_us is not None:
                self._high_water_us = max(high_water, tally.newest_us)
            return tally
        finally:
            _finish(*stored, pending=[*writes, *([bronze] if bronze is not None else [])])

    def _looked_up(
        self, spark: SparkSession, classified: DataFrame, checks: Sequence[Row], before: dict
    ) -> DataFrame:
        """``classified`` with the rows whose key silver holds (as of ``before``) among those
        the key index could not settle made duplicates, kept; ``classified`` itself when no
        row needed a look-up, as is usual."""
        found: DataFrame | None = None
        for p in self.plans:
            ranges = [c for c in checks if c.kind == p.kind.name and c.low is not None]
            if ranges:
                keys = frames.silver_keys(spark, p.path, before[p.kind.name], p.kind, ranges)
                found = keys if found is None else found.unionByName(keys)
        return classified if found is None else _kept(frames.looked_up(classified, found))

    @staticmethod
    def _stop_at(failed: Row | None) -> None:
        """Raise for the row a ``fail`` rule rejected, if any."""
        if failed is not None:
            raise _failed(failed.rule, failed.topic, failed.kafka_partition, failed.kafka_offset)

    def _commit_silver(self, rows: DataFrame, plan: KindPlan, tally: Tally, batch_id: int) -> None:
        """Append ``plan``'s new rows (classified in the executors) to its silver table once,
        then move its key index (``_append_silver``, for the executor placement)."""
        keys = tally.key_highs.get(plan.kind.name, {})
        if plan is self.trades or keys:
            ledger = self._silver_ledgers[plan.kind.name]
            ledger.append(frames.new_rows(rows, plan.kind), plan.path, batch_id)
            version = table_version(rows.sparkSession, plan.path)
            self._index[plan.kind.name].advance(version, keys.items())

    def _classify(
        self,
        spark: SparkSession,
        evaluated: DataFrame,
        table: pa.Table,
        plan: KindPlan,
        before: int,
    ) -> _Classified:
        """Deduplicate ``plan``'s collected rows against its silver table at ``before``; stop
        on a ``fail`` rule; its new rows, live rows and the quarantine rows of the others."""
        mine = table.filter(pc.equal(table.column("kind"), plan.kind.name))
        rows = candidates(mine)
        live = live_mask(mine, plan.kind)
        settled = [i for i, is_live in enumerate(live) if not is_live]
        index = self._index[plan.kind.name]  # _silver_before set it for this batch
        found = classify([rows[i] for i in settled], index, self._lookup(spark, plan, before))
        classes = [LIVE] * len(rows)
        for i, c in zip(settled, found, strict=True):
            classes[i] = c
        self._stop_on_failures(mine, rows, classes, plan.unique_rule)
        new, served = served_rows(mine, classes, plan.kind)
        duplicates = [r for r, c in zip(rows, classes, strict=True) if c == DUPLICATE]
        positions = _positions(spark, duplicates) if duplicates else None
        of_kind = evaluated.where(F.col("kind") == plan.kind.name)
        raw = _raw_values(of_kind, positions)
        others = [i for i, c in enumerate(classes) if c in (DUPLICATE, REJECTED)]
        quarantined = [
            quarantine_row(
                r, classes[i], raw.get((r["kafka_partition"], r["kafka_offset"]), r["raw_value"]),
                plan.unique_rule.name,
            )
            for i, r in zip(
                others, mine.take(pa.array(others, pa.int64())).to_pylist(), strict=True
            )
        ]  # fmt: skip
        return _Classified(rows, classes, new, served, positions, quarantined)

    def _append_silver(
        self,
        spark: SparkSession,
        evaluated: DataFrame,
        plan: KindPlan,
        batch: _Classified,
        batch_id: int,
    ) -> None:
        """Append ``plan``'s new rows to its silver table once (the ledger), then move its key
        index to the table's new version. Trades always append (Delta skips an empty
        commit); other kinds only when the batch has new rows of theirs."""
        if plan is self.trades or batch.new.num_rows:
            of_kind = evaluated.where(F.col("kind") == plan.kind.name)
            rows = _new_rows(of_kind, batch.positions, plan.kind)
            self._silver_ledgers[plan.kind.name].append(rows, plan.path, batch_id)
        # Our commit is the latest (a replay's skipped write: the one it made before).
        keys = new_keys(batch.rows, batch.classes).items()
        if keys or plan is self.trades:
            self._index[plan.kind.name].advance(table_version(spark, plan.path), keys)

    def _append_bronze(self, evaluated: DataFrame, batch_id: int) -> None:
        """Every record of the batch into Delta bronze, once (runs in the bronze thread)."""
        rows = bronze_rows(evaluated, datetime.now(UTC))
        self._bronze_ledger.append(rows, self.settings.table_path("bronze"), batch_id)

    def _silver_before(self, spark: SparkSession, plan: KindPlan, batch_id: int) -> int:
        """The version of ``plan``'s silver table this batch classifies against, with its key
        index at it.

        Right after a (re)start the batch may be a replay that already committed: then it is
        the version before that commit, so the replay classifies like the first attempt."""
        path, record_id, name = plan.path, plan.kind.entity.record_id, plan.kind.name
        index = self._index.get(name)
        if index is None:
            committed = self._silver_ledgers[name].committed(spark, path, batch_id)
            before = table_version(spark, path) if committed is None else committed - 1
            if before == 0 and created_empty(spark, path):  # a fresh lake: no key, no scan
                self._index[name] = KeyIndex(before)
            else:
                self._index[name] = key_index(spark, path, before, record_id)
            return before
        latest = table_version(spark, path)
        if latest != index.version:  # another writer committed to silver
            log.info("%s has commits from outside the job (version %d, expected %d): "
                     "rebuilding its key index", path, latest, index.version)  # fmt: skip
            self._index[name] = key_index(spark, path, latest, record_id)
        return latest

    def _lookup(self, spark: SparkSession, plan: KindPlan, before: int):
        """``classify``'s lookup: the keys ``plan``'s silver holds at ``before``, by key."""
        path, record_id = plan.path, plan.kind.entity.record_id
        return lambda keys: keys_in_silver(spark, path, before, keys, record_id)

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
    def _stop_on_failures(
        self, table: pa.Table, rows: list[Keyed], classes: list[str], unique_rule: Rule
    ) -> None:
        """Raise for the first row (by Kafka position) that a ``fail`` rule rejected."""
        fail_rules = table.column("fail_rule").to_pylist()
        failing = [i for i, rule in enumerate(fail_rules) if rule is not None]
        if unique_rule.action == "fail":
            failing += [i for i, c in enumerate(classes) if c == DUPLICATE]
        if not failing:
            return
        i = min(failing, key=lambda i: (rows[i].kafka_partition, rows[i].kafka_offset))
        rule = fail_rules[i] or unique_rule.name
        topic = table.column("topic")[i].as_py()
        raise _failed(rule, topic, rows[i].kafka_partition, rows[i].kafka_offset)

    def _record(self, app: str, batch_id: int, tally: Tally, dt: float, steps: _Steps) -> None:
        """The batch's numbers: ``stats``, its ``pipeline_batches`` row and its log line."""
        warn = {r.name for p in self.plans for r in p.rules if r.action == "warn"}
        warned = {k: v for k, v in tally.failed.items() if k in warn}
        failed = {k: v for k, v in tally.failed.items() if k not in warn}
        output = tally.new_rows.get(self.trades.kind.name, 0)
        p50, p99 = (nearest_rank(tally.latencies, q) for q in (0.50, 0.99))
        s = self.stats
        s.batches += 1
        s.last_batch_id, s.input_rows, s.output_rows = batch_id, tally.input_rows, output
        s.quarantined, s.late, s.duration_s, s.warned = tally.quarantined, tally.late, dt, warned
        s.latency_p50_ms = p50
        s.recent.add_statistics(*order_statistics(tally.latencies))
        s.total_output += output
        s.total_quarantined += tally.quarantined
        for name, n in tally.new_rows.items():
            s.rows_by_kind[name] = s.rows_by_kind.get(name, 0) + n
        record_batch(  # ops hook: the batch's own numbers in pipeline_batches (best effort)
            self.settings,
            self.job,
            batch_id,
            query_id=app,
            output_rows=output,
            quarantined=tally.quarantined,
            late=tally.late,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
        )
        others = "".join(
            f" {name}={n}" for name, n in tally.new_rows.items() if name != self.trades.kind.name
        )
        log.info(
            "%s batch=%d input=%d output=%d quarantined=%d late=%d windows=%d duration_ms=%d "
            "e2e_p50_ms=%s failed=%s warned=%s steps_ms=%s small=%s%s%s",
            self.job,
            batch_id,
            tally.input_rows,
            output,
            tally.quarantined,
            tally.late,
            tally.windows,
            dt * 1000,
            "-" if p50 is None else f"{p50:.0f}",
            json.dumps(failed, separators=(",", ":")),
            json.dumps(warned, separators=(",", ":")),
            steps,
            str(s.small).lower(),
            others + "".join(f" {k}={v}" for k, v in tally.reconciled.items()),
            " postgres=already-applied" if tally.replayed else "",
        )


def _failed(rule: str, topic: str, partition: int, offset: int) -> ExpectationFailed:
    """The error that stops the query at a record a ``fail`` rule rejected."""
    return ExpectationFailed(
        f"expectation {rule} (action fail) rejected the record at {topic}/{partition}/{offset}: "
        "the pipeline stops; fix the input or change the rule's action to drop or warn in the "
        "expectation suite"
    )


def _finish(*kept: DataFrame, pending: Sequence[Future]) -> None:
    """Wait for the batch's writes still running, then free what ``_kept`` stored."""
    for write in pending:
        if not write.done():
            write.exception()  # never leave the cache to a write still reading it
    for batch in kept:
        _release(batch)


def _kept(batch: DataFrame) -> DataFrame:
    """``batch`` computed once, by the batch's first job, and kept for its later jobs (the
    bronze, silver and quarantine appends read it again).

    In local mode as a local checkpoint: the later jobs' tasks then carry a lineage of one
    stored RDD instead of the whole Kafka, parse and validation plan, whose serialising and
    deserialising per job took about 15% of the driver's CPU with four stream kinds. On a
    cluster, cached: an executor lost mid-batch then has its part recomputed from Kafka,
    where a local checkpoint would fail the batch."""
    if (batch.sparkSession.sparkContext.master or "").startswith("local"):
        return batch.localCheckpoint(eager=False)
    return batch.persist()


def _release(batch: DataFrame) -> None:
    """Free what ``_kept`` stored for ``batch``."""
    if batch.is_cached:
        batch.unpersist()
    else:  # a local checkpoint: the blocks of the RDD it scans
        batch._jdf.queryExecution().analyzed().rdd().unpersist(False)


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


def _collected_columns(plans: Sequence[KindPlan]) -> list[Column]:
    """What the driver needs of each row: every kind's serving and quarantine columns and
    the verdict. The raw frame travels only for rejected rows (duplicates fetch theirs
    separately)."""
    served = [c for p in plans for c in p.spec.columns]
    names = dict.fromkeys([*served, *_QUARANTINE_COLUMNS, *PARSE_COLUMNS, "dropped", "fail_rule",
                           "failed_expectations"])  # fmt: skip
    del names["quarantined_at"]  # = spark_time
    return [
        F.when(F.col("dropped"), F.col(n)).alias(n) if n == "raw_value" else F.col(n) for n in names
    ]


class _Classified(NamedTuple):
    """One kind's rows of a batch after deduplication (``PipelineBatch._classify``)."""

    rows: list[Keyed]
    classes: list[str]
    new: pa.Table  # the new rows: silver's and the serving table's
    served: Rows  # what the serving table gets: the new rows, and the latest live ones
    positions: DataFrame | None  # Kafka positions of the duplicates (broadcast), if any
    quarantined: list[tuple]  # quarantine rows of the rejected records and duplicates


def _unread_rows(table: pa.Table) -> list[tuple]:
    """Quarantine rows of the records of a topic no stream kind reads (``kind`` NULL)."""
    unread = table.filter(pc.is_null(table.column("kind")))
    return [quarantine_row(r, REJECTED, r["raw_value"], "") for r in unread.to_pylist()]


def _positions(spark: SparkSession, rows: list[Keyed]) -> DataFrame:
    """The (partition, offset) of ``rows``, small enough to broadcast."""
    schema = "kafka_partition int, kafka_offset long"
    pairs = [(r.kafka_partition, r.kafka_offset) for r in rows]
    return F.broadcast(spark.createDataFrame(pairs, schema))


def _raw_values(evaluated: DataFrame, duplicates: DataFrame | None) -> dict[tuple[int, int], bytes]:
    """The raw frames of the rows at the ``duplicates`` positions, by (partition, offset)
    (``evaluated``: one kind's rows, so one topic's positions)."""
    if duplicates is None:
        return {}
    found = evaluated.join(duplicates, ["kafka_partition", "kafka_offset"], "left_semi")
    rows = found.select("kafka_partition", "kafka_offset", "raw_value").collect()
    return {(r.kafka_partition, r.kafka_offset): r.raw_value for r in rows}


def _new_rows(evaluated: DataFrame, duplicates: DataFrame | None, kind: StreamKind) -> DataFrame:
    """``kind``'s rows for silver (``evaluated``: that kind's rows): not rejected, final,
    and not at the ``duplicates`` positions."""
    kept = evaluated.where(~F.col("dropped"))
    if kind.entity.final is not None:
        kept = kept.where(F.col(kind.entity.final))
    if duplicates is not None:
        kept = kept.join(duplicates, ["kafka_partition", "kafka_offset"], "left_anti")
    return kept.select(*kind.columns)
