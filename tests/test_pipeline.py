"""The pipeline's query against the real broker, Spark, Delta and PostgreSQL (in-process)."""

from __future__ import annotations

from datetime import UTC

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from cryptoflow.core.config import Settings
from pipelines import job
from tests.conftest import wait_until
from tests.pipeline_helpers import (
    expected,
    frame,
    isolated,
    pg_rows,
    pg_trades,
    produce,
    produce_trades,
    trades,
)

pytestmark = pytest.mark.integration


def _run_until(spark, s: Settings, done, what: str, timeout: float = 180):
    """Start the pipeline's query, wait for ``done()``, stop it."""
    query = job.start(spark, s)
    try:

        def check():
            if query.exception():
                raise AssertionError(f"{query.name} failed: {query.exception()}")
            return done()

        wait_until(check, timeout, 0.5, what)
    finally:
        job.stop(query)
    return query


def _drain(spark, s: Settings):
    return job.drain(spark, s)


def test_bronze_keeps_every_record_once_including_invalid_bytes(spark, settings, unique, tmp_path):
    s = isolated(settings, unique, tmp_path)
    good = trades(40, s.symbols)
    bad = [(None, b"\xff\xfe not utf-8"), (b"x", b""), (b"y", b'{"stream":"x"}')]
    records = [(t["s"].encode(), frame(t)) for t in good] + bad
    produce(s, records)
    _drain(spark, s)
    bronze = spark.read.format("delta").load(s.table_path("bronze"))
    rows = bronze.select("value", "partition", "offset", "headers").collect()
    assert len(rows) == len(records)
    assert len({(r.partition, r.offset) for r in rows}) == len(records)
    assert sorted(r.value for r in rows) == sorted(v for _, v in records)
    assert all(
        {"key": "source", "value": "simulator"} in [h.asDict() for h in r.headers] for r in rows
    )
    # A second drain finds nothing new: the checkpoint holds, no record is written twice.
    _drain(spark, s)
    assert bronze.count() == len(records)


@pytest.mark.parametrize("placement", ["driver", "executors"])
def test_small_batches_append_one_file_each_and_stay_exact(
    spark, settings, unique, tmp_path, placement
):
    """Batches of 40 records with CRYPTOFLOW_SMALL_BATCH_ROWS=100: in the driver placement,
    after the first (which may be a backlog), each batch runs as a small one (interpreted
    projections, one task and one file per Delta append); the executor placement never
    does. raw_trades, silver and bronze are exact either way."""
    s = isolated(settings, unique, tmp_path).replace(
        max_offsets_per_trigger=40, small_batch_rows=100, batch_placement=placement
    )
    payloads = trades(160, s.symbols)
    produce_trades(s, payloads)
    stats = _drain(spark, s).handler.stats
    small = placement == "driver"
    assert stats.batches >= 4 and stats.small is small
    assert pg_trades(s, s.symbols) == expected(payloads)
    for table, rows in (("silver", 160), ("bronze", 160)):
        df = spark.read.format("delta").load(s.table_path(table))
        assert df.count() == rows
        appends = (
            DeltaTable.forPath(spark, s.table_path(table)).history()
            .where("operation = 'WRITE'").orderBy("version").collect()
        )  # fmt: skip
        files = [int(c.operationMetrics["numFiles"]) for c in appends]
        assert len(files) == stats.batches, files
        if small:
            assert set(files[1:]) == {1}, files
    silver = spark.read.format("delta").load(s.table_path("silver"))
    assert silver.select("symbol", "trade_id").distinct().count() == 160


@pytest.mark.parametrize("placement", ["driver", "executors"])
def test_silver_mirrors_exactly_and_quarantines_duplicates_once(
    spark, settings, unique, tmp_path, placement
):
    """With the batch's per-row work in the driver and in executor tasks (one per symbol
    partition): replays of old trades are looked up in silver and quarantined once."""
    s = isolated(settings, unique, tmp_path).replace(batch_placement=placement)
    first = trades(300, s.symbols)
    produce_trades(s, first)
    silver = s.table_path("silver")

    def silver_count(n):
        return lambda: (
            spark.read.format("delta").load(silver).count() >= n
            and len(pg_trades(s, s.symbols)) >= n
        )

    _run_until(spark, s, silver_count(300), "first 300 trades in silver and postgres")
    # Later batches: 20 replays of old trades (one twice), plus 50 new trades and a bad frame.
    more = trades(350, s.symbols)[300:]
    dups = first[:20] + first[:1]
    produce_trades(s, dups + more)
    produce(s, [(b"junk", b"not json")])

    def q_count(n):  # Postgres is written before Delta: wait for both
        return lambda: (
            len(pg_rows(s, "SELECT 1 FROM quarantine WHERE topic = %s", (s.kafka_topic,))) >= n
            and spark.read.format("delta").load(s.table_path("quarantine")).count() >= n
        )

    _run_until(spark, s, lambda: silver_count(350)() and q_count(22)(), "duplicates in quarantine")

    assert pg_trades(s, s.symbols) == expected(first + more)
    df = spark.read.format("delta").load(silver)
    assert df.count() == 350
    assert df.groupBy("symbol", "trade_id").count().where("count > 1").count() == 0
    assert df.agg(F.sum("price")).first()[0] == sum(v[0] for v in expected(first + more).values())
    reasons = pg_rows(
        s,
        "SELECT failed_expectations, count(*) FROM quarantine WHERE topic = %s GROUP BY 1",
        (s.kafka_topic,),
    )
    counts = {tuple(r): n for r, n in reasons}
    assert counts.pop(("trade_unique",)) == 21
    ((junk_reasons, junk_count),) = counts.items()  # the one bad frame, every rule it broke
    assert junk_count == 1 and "frame_parses" in junk_reasons
    quarantine = spark.read.format("delta").load(s.table_path("quarantine"))
    assert quarantine.count() == 22


@pytest.mark.parametrize("crash_at", ["_new_rows", "advance"])
def test_replayed_batch_after_a_crash_is_identical(
    spark, settings, unique, tmp_path, monkeypatch, crash_at
):
    """A crash after PostgreSQL but before the silver commit (``_new_rows``), or after every
    write (``advance``): the replay (a fresh handler, as after a restart) must neither
    quarantine its own rows as duplicates nor change or repeat any row."""
    from datetime import datetime

    from expectations.rules import trade_rules, unique_key_rule
    from pipelines import batch as pipeline_batch
    from pipelines.bronze.transform import BRONZE_SCHEMA
    from pipelines.ledger import find_committed_batch
    from pipelines.silver.transform import parse_frames
    from pipelines.silver.validate import apply_rules

    s = isolated(settings, unique, tmp_path)
    payloads = trades(40, s.symbols)
    rows = [
        (frame(t), t["s"], s.kafka_topic, 0, i, datetime.now(), [("source", "simulator")],
         None, None)
        for i, t in enumerate(payloads + payloads[:3])
    ]  # fmt: skip
    job.ensure_lake(spark, s)
    plans = job.kind_plans(s, trade_rules(s), unique_key_rule(s))
    batch_time = datetime.now(UTC).replace(microsecond=0)  # the offset log's batch timestamp
    kinds = {s.topic(p.kind): p.kind for p in plans}
    parsed = parse_frames(spark.createDataFrame(rows, BRONZE_SCHEMA), batch_time, kinds)
    batch = apply_rules(parsed, {p.kind.name: p.rules for p in plans})

    def handler():
        return pipeline_batch.PipelineBatch(s, plans, lambda _: f"app-{unique}", job.QUERY)

    def crash(*args, **kwargs):
        raise RuntimeError("crash")

    with monkeypatch.context() as m:
        if crash_at == "advance":
            m.setattr(pipeline_batch.KeyIndex, "advance", crash)
        else:
            m.setattr(pipeline_batch, crash_at, crash)
        with pytest.raises(RuntimeError, match="crash"):
            handler()(batch, 7)
    assert pg_trades(s, s.symbols) == expected(payloads)  # Postgres is written first
    silver = spark.read.format("delta").load(s.table_path("silver"))
    quarantine = spark.read.format("delta").load(s.table_path("quarantine"))
    assert silver.count() == (40 if crash_at == "advance" else 0)

    replay = handler()
    replay(batch, 7)
    assert replay.stats.output_rows == 40 and replay.stats.quarantined == 3
    assert silver.count() == 40 and quarantine.count() == 3  # nothing written twice
    assert spark.read.format("delta").load(s.table_path("bronze")).count() == 43
    assert pg_trades(s, s.symbols) == expected(payloads)
    # The folded windows count every trade once (the ledger skipped the replay's fold).
    counted = pg_rows(
        s,
        "SELECT sum(trade_count) FROM metrics WHERE symbol = ANY(%s) "
        "AND window_end - window_start = make_interval(secs => %s)",
        (s.symbols, s.window_seconds),
    )
    assert counted == [(40,)]
    spark_times = pg_rows(s, "SELECT DISTINCT spark_time FROM raw_trades WHERE symbol = ANY(%s)",
                          (s.symbols,))  # fmt: skip
    delta_times = {r[0] for r in silver.select("spark_time").distinct().collect()}
    # One spark_time, the batch's, in Delta and Postgres (PySpark returns naive local times).
    assert [t for (t,) in spark_times] == [batch_time]
    assert {t.astimezone(UTC) for t in delta_times} == {batch_time}
    # A batch with nothing new leaves no silver commit (Delta skips empty ones): silver is
    # unchanged, so a replay classifies it against the same version. Its quarantine commit
    # is in the ledger, and a replay skips it.
    again = handler()
    again(batch, 8)
    assert again.stats.output_rows == 0 and again.stats.quarantined == 43
    assert find_committed_batch(spark, s.table_path("silver"), f"app-{unique}", 8) is None
    assert find_committed_batch(spark, s.table_path("quarantine"), f"app-{unique}", 8) is not None
    handler()(batch, 8)
    assert silver.count() == 40 and quarantine.count() == 3 + 43


@pytest.mark.parametrize(
    ("kill_at", "placement"),
    [("after-postgres", "driver"), ("after-delta", "driver"), ("after-postgres", "executors")],
)
def test_process_killed_inside_a_batch_loses_and_repeats_nothing(
    spark, settings, unique, tmp_path, kill_at, placement
):
    """SIGKILL of the pipeline's process between a batch's PostgreSQL commit and its Delta
    commits, or after its Delta commits but before Spark's commit log: after a restart no
    window is counted twice and no trade is lost, in PostgreSQL and in Delta (each
    partition of an executor placement's batch has its ledger row)."""
    import subprocess
    import sys

    from tests.metrics_oracle import compare_metrics, expected_metrics
    from tests.pipeline_helpers import env_for

    s = isolated(settings, unique, tmp_path).replace(batch_placement=placement)
    first = trades(120, s.symbols)
    produce_trades(s, first)
    log = tmp_path / "killed.log"
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.crash_run", kill_at, "0"],
            env=env_for(s), stdout=out, stderr=subprocess.STDOUT, timeout=300,
        )  # fmt: skip
    assert proc.returncode == -9, log.read_text()[-3000:]
    landed = pg_trades(s, s.symbols)
    assert landed == expected(first)  # PostgreSQL committed before the kill
    silver = spark.read.format("delta").load(s.table_path("silver"))
    assert silver.count() == (120 if kill_at == "after-delta" else 0)

    # After the kill: repeats of old trades, new trades, and a restart on the checkpoint.
    more = trades(180, s.symbols)[120:]
    produce_trades(s, first[:10] + more)
    _drain(spark, s)
    everything = first + more
    assert pg_trades(s, s.symbols) == expected(everything)
    assert silver.count() == silver.select("symbol", "trade_id").distinct().count() == 180
    bronze = spark.read.format("delta").load(s.table_path("bronze"))
    assert bronze.count() == bronze.select("partition", "offset").distinct().count() == 190
    quarantine = spark.read.format("delta").load(s.table_path("quarantine"))
    assert quarantine.count() == 10
    assert compare_metrics(expected_metrics(everything, s.window_seconds), pg_metrics(s)) == []
    gold = [r.asDict() for r in spark.read.format("delta").load(s.table_path("gold")).collect()]
    assert compare_metrics(expected_metrics(everything, s.window_seconds), gold) == []
    applied = pg_rows(
        s,
        "SELECT batch_id, part, count(*) FROM applied_batches WHERE query_id = %s GROUP BY 1, 2",
        (_query_id(s),),
    )
    assert 0 in {b for b, _, _ in applied} and all(n == 1 for _, _, n in applied)
    if placement == "executors":  # a ledger row per symbol partition that had rows
        assert {p for b, p, _ in applied if b == 0} <= set(range(s.spark_shuffle_partitions))


def pg_metrics(s: Settings) -> list[dict]:
    from pipelines.gold.transform import METRIC_COLUMNS

    rows = pg_rows(
        s, f"SELECT {', '.join(METRIC_COLUMNS)} FROM metrics WHERE symbol = ANY(%s)", (s.symbols,)
    )
    return [dict(zip(METRIC_COLUMNS, r, strict=True)) for r in rows]


def _query_id(s: Settings) -> str:
    import json
    from pathlib import Path

    return json.loads(Path(s.checkpoint_path(job.QUERY), "metadata").read_text())["id"]


def test_readers_never_see_a_window_without_its_trades(spark, settings, unique, tmp_path):
    """Read raw_trades and metrics in one snapshot while batches land: every window's
    trade_count equals the count of its trades in raw_trades."""
    import threading

    s = isolated(settings, unique, tmp_path)
    payloads = trades(600, s.symbols)
    consistent = """
        SELECT m.symbol, m.window_start, m.window_end, m.trade_count,
               (SELECT count(*) FROM raw_trades r WHERE r.symbol = m.symbol
                  AND r.trade_time >= m.window_start AND r.trade_time < m.window_end)
        FROM metrics m WHERE m.symbol = ANY(%s)"""
    seen: list[tuple[int, int]] = []  # (windows read, trades in raw_trades) per snapshot
    stop = threading.Event()

    def produce_in_waves():
        for i in range(0, len(payloads), 50):
            produce_trades(s, payloads[i : i + 50])
            if stop.wait(1.0):
                return

    producer = threading.Thread(target=produce_in_waves)
    query = job.start(spark, s)
    producer.start()
    try:

        def all_landed():
            assert query.exception() is None, query.exception()
            rows = pg_rows(s, consistent, (s.symbols,))  # one statement: one snapshot
            wrong = [r for r in rows if r[3] != r[4]]
            assert not wrong, f"windows whose count differs from raw_trades: {wrong[:5]}"
            short = [r for r in rows if (r[2] - r[1]).total_seconds() == s.window_seconds]
            seen.append((len(rows), sum(r[3] for r in short)))
            return seen[-1][1] == len(payloads)

        wait_until(all_landed, 240, 0.1, "every trade in metrics")
    finally:
        stop.set()
        producer.join()
        job.stop(query)
    partial = {n for _, n in seen if 0 < n < len(payloads)}
    assert partial, f"no read saw the pipeline between two batches: {seen}"
