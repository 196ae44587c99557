"""The pipeline's query against the real broker, Spark, Delta and PostgreSQL (in-process)."""

from __future__ import annotations

from datetime import UTC

import pytest
from pyspark.sql import functions as F

from cryptoflow.config import Settings
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
    query = job.start(spark, s, available_now=True)
    query.awaitTermination(180)
    assert query.exception() is None, query.exception()
    job.stop(query)
    return query


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


def test_silver_mirrors_exactly_and_quarantines_duplicates_once(spark, settings, unique, tmp_path):
    s = isolated(settings, unique, tmp_path)
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
    from pipelines.bronze.job import ensure_bronze_table
    from pipelines.bronze.transform import BRONZE_SCHEMA
    from pipelines.ledger import find_committed_batch
    from pipelines.silver import batch as silver_batch
    from pipelines.silver.tables import ensure_tables
    from pipelines.silver.transform import parse_frames
    from pipelines.silver.validate import apply_rules

    s = isolated(settings, unique, tmp_path)
    payloads = trades(40, s.symbols)
    rows = [
        (frame(t), t["s"], s.kafka_topic, 0, i, datetime.now(), [("source", "simulator")],
         None, None)
        for i, t in enumerate(payloads + payloads[:3])
    ]  # fmt: skip
    ensure_bronze_table(spark, s.table_path("bronze"))
    ensure_tables(spark, s.table_path("silver"), s.table_path("quarantine"))
    rules, unique_rule = trade_rules(s), unique_key_rule(s)
    batch_time = datetime.now(UTC).replace(microsecond=0)  # the offset log's batch timestamp
    batch = apply_rules(parse_frames(spark.createDataFrame(rows, BRONZE_SCHEMA), batch_time), rules)

    def handler():
        return silver_batch.SilverBatch(s, rules, unique_rule, lambda _: f"app-{unique}")

    def crash(*args, **kwargs):
        raise RuntimeError("crash")

    with monkeypatch.context() as m:
        if crash_at == "advance":
            m.setattr(silver_batch.KeyIndex, "advance", crash)
        else:
            m.setattr(silver_batch, crash_at, crash)
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
    assert pg_trades(s, s.symbols) == expected(payloads)
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
