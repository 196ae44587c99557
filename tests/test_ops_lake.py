"""Operations against the real services: history/query/time travel, maintenance during a
running stream, pipeline_batches per micro-batch, checkpoints listing and `status --once`."""

from __future__ import annotations

import json
import re

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from cryptoflow.cli import main
from cryptoflow.core.db import connect
from cryptoflow.core.services import kafka
from cryptoflow.core.services.postgres import admin_dsn
from pipelines.ops.batches import attach_recorder, record_batch
from pipelines.ops.maintain import MaintenanceError, maintain
from pipelines.ops.tables import TableError, history, run_query
from tests.conftest import wait_until
from tests.pipeline_helpers import produce

pytestmark = pytest.mark.integration


@pytest.fixture
def lake(settings, unique, tmp_path):
    return settings.replace(
        lake_root=str(tmp_path / "lake"),
        checkpoint_root=str(tmp_path / "ckpt"),
        kafka_topic_prefix=f"test.ops.{unique}",
    )


def cli(monkeypatch, capsys, s, *argv: str) -> tuple[int, str, str]:
    """Run ``cryptoflow ARGV`` in-process with ``s`` as its environment."""
    for key, value in s.to_env().items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_history_query_and_time_travel(spark, lake, monkeypatch, capsys):
    path = lake.table_path("gold")
    spark.range(2).withColumn("v", F.lit("a")).write.format("delta").save(path)  # version 0
    spark.range(2, 5).withColumn("v", F.lit("b")).write.format("delta").mode("append").save(path)
    DeltaTable.forPath(spark, path).delete("id = 0")  # version 2

    entries = history(spark, lake, "gold")
    assert [(e.version, e.operation, e.rows) for e in entries] == [
        (2, "DELETE", 0),
        (1, "WRITE", 3),
        (0, "WRITE", 2),
    ]
    count = "SELECT count(*) AS n FROM gold"
    assert run_query(spark, lake, count).first().n == 4
    assert run_query(spark, lake, count, as_of=0).first().n == 2
    assert run_query(spark, lake, count, as_of=1).first().n == 5
    at_v1 = entries[1].timestamp.isoformat(sep=" ")
    assert run_query(spark, lake, count, as_of=at_v1).first().n == 5
    with pytest.raises(TableError) as e:
        run_query(spark, lake, count, as_of=9)
    assert str(e.value) == (
        "version 9 is outside gold's history (versions 0..2): see `cryptoflow history gold`"
    )
    with pytest.raises(TableError) as e:
        run_query(spark, lake, "SELECT * FROM platinum")
    assert str(e.value) == (
        "unknown table 'platinum' in the query: the tables are bronze, silver, quarantine, "
        "gold, agg_trades, exchange_klines, book_ticker, candles, reconciliation"
    )

    rc, out, _ = cli(monkeypatch, capsys, lake, "query", count, "--as-of", "1", "--format", "json")
    assert rc == 0 and json.loads(out) == {"n": 5}
    rc, out, _ = cli(monkeypatch, capsys, lake, "history", "gold", "--format", "csv")
    assert rc == 0 and out.splitlines()[1].startswith("2,") and ",DELETE,0," in out
    rc, _, err = cli(monkeypatch, capsys, lake, "query", count, "--as-of", "7")
    assert rc == 2 and "version 7 is outside gold's history (versions 0..2)" in err


def test_maintain_while_a_stream_appends(spark, lake):
    path = lake.table_path("bronze")
    stream = (
        spark.readStream.format("rate")
        .option("rowsPerSecond", 20)
        .load()
        .select(
            "value", F.date_sub(F.current_date(), (F.col("value") % 3).cast("int")).alias("day")
        )
        .writeStream.format("delta")
        .partitionBy("day")
        .option("checkpointLocation", lake.checkpoint_path("rate"))
        .trigger(processingTime="500 milliseconds")
        .start(path)
    )
    try:
        table = lambda: DeltaTable.forPath(spark, path)  # noqa: E731
        latest = lambda: table().history(1).first().version  # noqa: E731
        wait_until(
            lambda: DeltaTable.isDeltaTable(spark, path) and latest() >= 4,
            timeout=120,
            what="five streaming commits",
        )
        inside_window = latest()
        rows_then = spark.read.format("delta").option("versionAsOf", inside_window).load(path)
        rows_then = rows_then.count()
        with pytest.raises(MaintenanceError):
            maintain(spark, lake, ["bronze"], retain_hours=1)
        [report] = maintain(spark, lake, ["bronze"])
        assert report.files_compacted > 0, report  # closed days had many small files
        assert report.files_vacuumed == 0  # nothing is older than the 168 h window
        assert report.properties_set == ()  # table busy: metadata commit deferred
        after = latest()
        wait_until(lambda: latest() >= after + 2, timeout=120, what="commits after maintain")
        assert stream.exception() is None
    finally:
        stream.stop()
    assert stream.exception() is None
    df = spark.read.format("delta").load(path)
    n, distinct, top = df.agg(F.count("*"), F.countDistinct("value"), F.max("value")).first()
    assert n == distinct == top + 1  # no row lost, none duplicated
    old = spark.read.format("delta").option("versionAsOf", inside_window).load(path)
    assert old.count() == rows_then
    ops = [e.operation for e in history(spark, lake, "bronze")]
    assert "OPTIMIZE" in ops

    [report] = maintain(spark, lake, ["bronze"], set_properties=True)
    props = DeltaTable.forPath(spark, path).detail().first().properties
    assert props["delta.deletedFileRetentionDuration"] == "interval 168 hours"
    assert report.properties_set == (
        "delta.deletedFileRetentionDuration",
        "delta.logRetentionDuration",
    )


def test_batches_recorded_then_listed(spark, lake, unique, monkeypatch, capsys):
    kafka.ensure_topic(lake, partitions=2)
    produce(lake, [(f"k{i % 2}".encode(), f"frame {i}".encode()) for i in range(50)])
    job = f"ops_{unique}"
    recorder = attach_recorder(spark, lake)
    query = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", lake.bootstrap_servers)
        .option("subscribe", lake.kafka_topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", 20)
        .load()
        .writeStream.queryName(job)
        .format("delta")
        .option("checkpointLocation", lake.checkpoint_path(job))
        .trigger(availableNow=True)
        .start(lake.table_path("bronze"))
    )
    query.awaitTermination(180)
    assert query.exception() is None
    sql = (
        "SELECT batch_id, input_rows, output_rows, kafka_lag, duration_ms FROM pipeline_batches"
        " WHERE job = %s ORDER BY batch_id"
    )

    def rows():
        with connect(admin_dsn(lake)) as conn, conn.cursor() as cur:
            cur.execute(sql, (job,))
            return cur.fetchall()

    recorded = wait_until(
        lambda: (r := rows()) and sum(x[1] for x in r) == 50 and r, what="batches recorded"
    )
    assert [r[0] for r in recorded] == list(range(len(recorded))) and len(recorded) >= 3
    # duration always; output rows when the sink reports them (Spark's -1 is stored as NULL)
    assert all(r[4] > 0 and r[2] in (None, r[1]) for r in recorded), recorded
    assert recorded[-1][3] == 0 and recorder.recorded >= len(recorded)

    # A job adds what only it knows; repeating a batch rewrites its one row.
    for _ in range(2):
        assert record_batch(lake, job, 0, quarantined=3, latency_p50_ms=1.5, latency_p99_ms=9.0)
    assert rows() == recorded
    with connect(admin_dsn(lake)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT input_rows, quarantined, latency_p99_ms FROM pipeline_batches "
            "WHERE job = %s AND batch_id = 0",
            (job,),
        )
        assert cur.fetchall() == [(recorded[0][1], 3, 9.0)]

    rc, out, _ = cli(monkeypatch, capsys, lake, "checkpoints", "--format", "json")
    listed = {c["job"]: c for c in map(json.loads, out.splitlines())}
    assert rc == 0 and listed["trades"]["exists"] == listed["replay-silver"]["exists"] == "no"
    mine = listed[job]
    assert mine["committed"] == len(recorded) - 1 and mine["exists"] == "yes"
    assert mine["position"].startswith(f"kafka {lake.kafka_topic} p0=")

    rc, out, _ = cli(monkeypatch, capsys, lake, "status", "--once")
    assert rc == 0
    assert "kafka     up" in out and "postgres  up" in out
    newest = rf"\n\s+{job}\s+{len(recorded) - 1}\s+{recorded[-1][1]}\s"
    assert re.search(newest, out), out  # the job's newest batch, with its input rows


def test_a_job_refuses_a_checkpoint_made_for_another_table(spark, lake, tmp_path):
    from pipelines import job
    from pipelines.ops.checkpoints import CheckpointConflict, ensure_checkpoint_owner

    ensure_checkpoint_owner(lake, "trades", "kafka:other.topic", lake.table_path("bronze"))
    with pytest.raises(CheckpointConflict) as e:
        job.start(spark, lake)
    ckpt = lake.checkpoint_path("trades")
    bronze = lake.table_path("bronze")
    assert str(e.value) == (
        f"checkpoint {ckpt} belongs to job trades (kafka:other.topic -> {bronze}), not to job "
        f"trades (kafka:{lake.kafka_topic} -> {bronze}): point CRYPTOFLOW_CHECKPOINT_ROOT / "
        "CRYPTOFLOW_LAKE_ROOT back at the tables this checkpoint was made for, or move "
        f"{ckpt} aside to start trades from scratch (it then reprocesses its whole source)"
    )
    assert not spark.streams.active or all(q.name != "trades" for q in spark.streams.active)
