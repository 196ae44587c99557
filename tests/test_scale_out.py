"""Issue 21's acceptance: the end-to-end exactness test scaled out, with failures.

One run of everything the issue adds at once: the pipeline's driver (``cryptoflow up
--no-ingest``) on a local standalone Spark cluster (a master and two workers of one core
each), its lake and checkpoints on ``s3a://`` in the embedded SeaweedFS, its trades in a
three-broker KRaft cluster (replication factor 3, two in sync), fed by ``cryptoflow ingest``
from the simulator with faults (dropped connections, skipped ids that ingestion backfills
from REST, malformed frames). Mid-stream the leader of a partition of the trade topic is
SIGKILLed (and stays dead), then the driver is SIGKILLed once and restarted from its S3
checkpoint on the remaining two brokers.

Then raw_trades equals the simulator's record, every row once; metrics equal the independent
oracle (tests/metrics_oracle.py); every frame ingestion produced is in Kafka once; bronze
holds each Kafka record once, silver each trade once, quarantine the rest; the tasks ran in
both workers' executors; and the ops commands (``checkpoints``, ``history``, ``query`` with
time travel) read the s3a tables and checkpoints back, on the cluster.

The services are this test's own (its data dir, free ports), started side by side by the
project's service code (tests/service_stacks.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptoflow.core import services
from cryptoflow.core.config import Settings
from cryptoflow.core.services import kafka, s3, spark_cluster
from cryptoflow.core.services.process import read_pid
from cryptoflow.supervisor import cryptoflow_argv
from ingestion.backfill import gaps_topic
from ingestion.simulator import SimulatorOptions, start_simulator_process
from ingestion.status import ingest_status_path, read_status
from tests import cli_session
from tests.conftest import make_data_dir, wait_until
from tests.metrics_oracle import compare_metrics, expected_metrics
from tests.pipeline_helpers import env_for, expected, isolated, pg_rows, pg_trades
from tests.service_stacks import (
    in_kafka,
    isr_of,
    kafka_cluster_settings,
    leader_of,
    partition_of,
    services_running,
    tasks_finished_per_worker,
    with_s3_lake,
    with_spark_cluster,
)
from tests.test_end_to_end import latencies, metrics_rows, recorded, start, stop

pytestmark = pytest.mark.integration

BUCKET = "scale-out"
PER_SYMBOL = 300  # two symbols at 30 trades/s in all: 20 s of streaming
RATE = 30
# Records a batch reads at most: the driver is killed with half of the trades served, so at
# least a sixth is left for the restarted driver.
PER_BATCH = 200


@pytest.fixture
def scale_out(tmp_path: Path) -> Iterator[Settings]:
    """Three brokers, PostgreSQL, SeaweedFS and a Spark master with two workers, all of
    this test, in a data dir of its own (removed at the end, its logs kept in ``tmp_path``)."""
    data_dir = make_data_dir("cryptoflow-scale-")
    try:
        s = with_spark_cluster(with_s3_lake(kafka_cluster_settings(data_dir), BUCKET))
        t0 = time.monotonic()
        with services_running(s) as started:
            assert sorted(started) == ["kafka", "postgres", "s3", "spark"]
            print(f"3 brokers, PostgreSQL, SeaweedFS, master + 2 workers up in "
                  f"{time.monotonic() - t0:.1f}s")  # fmt: skip
            yield s
    finally:
        if (data_dir / "logs").is_dir():
            shutil.copytree(data_dir / "logs", tmp_path / "logs", dirs_exist_ok=True)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.timeout(2400)  # 3 min on a quiet machine; JVM starts take minutes under load
def test_on_the_cluster_on_s3_with_a_broker_and_the_driver_killed_stays_exact(
    scale_out: Settings, unique: str, tmp_path: Path
):
    t_start = time.monotonic()
    prefix = f"s3a://{BUCKET}/{unique}"
    s = isolated(scale_out, unique, tmp_path).replace(
        source="sim", lake_root=f"{prefix}/lake", checkpoint_root=f"{prefix}/checkpoints",
        max_offsets_per_trigger=PER_BATCH,
    )  # fmt: skip
    assert len(partition_of(s, 0).replicas) == 3
    spark_log, ingest_log = tmp_path / "up.log", tmp_path / "ingest.log"
    up = cryptoflow_argv("up", "--no-ingest", "--source", "sim", "--status-every", "5")
    driver = start(up, s, spark_log)
    sim = ingest = None
    try:
        wait_until(lambda: "up: running" in spark_log.read_text(), 600, 0.5,
                   f"the pipeline's query on the cluster (log: {spark_log})")  # fmt: skip
        print(f"driver running after {time.monotonic() - t_start:.1f}s")
        record = tmp_path / "record.jsonl"
        sim = start_simulator_process(
            s, SimulatorOptions(seed=21, rate=RATE, max_trades=PER_SYMBOL, record=record,
                                drop_every=6.0, skip_ids=2, skip_every=90, malformed_every=100,
                                wait_for_client=True),
        )  # fmt: skip
        ingest = start(cryptoflow_argv("ingest", "--source", "sim"), s, ingest_log)
        total = PER_SYMBOL * len(s.symbols)

        # 1. A quarter of the trades in Kafka: SIGKILL the leader of partition 0 (for good).
        wait_until(lambda: in_kafka(s) >= total // 4, 180, 0.2, "a quarter of the trades in Kafka")
        victim = leader_of(s, 0)
        node = next(n for n in kafka.nodes(s) if n.node_id == victim)
        pid = read_pid(node.pid)
        assert pid
        os.killpg(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        assert not recorded(record, s.symbols, PER_SYMBOL), "the stream ended before the kill"
        # a new leader from the in-sync replicas, and the ISR without the dead broker
        wait_until(lambda: leader_of(s, 0) not in (victim, -1) and victim not in isr_of(s, 0),
                   60, 0.5, "a new leader and the ISR without the dead broker")  # fmt: skip
        failover_s = time.monotonic() - killed_at
        (status,) = (x for x in services.status(s) if x.name == "kafka")
        assert not status.healthy and f"node(s) {victim} down" in status.detail, status

        # 2. Half of the trades served: SIGKILL the driver (no shutdown hook runs; the
        # master removes its executors) and restart it on the two brokers left.
        served_at_broker_kill = served(s, spark_log)
        target = max(total // 2, served_at_broker_kill + 1)
        wait_until(lambda: served(s, spark_log) >= target, 300, 0.5,
                   f"{target} trades served before the driver's kill")  # fmt: skip
        driver.kill()
        driver.wait(30)
        served_at_driver_kill = served(s, spark_log)
        assert served_at_driver_kill < total, "everything was served before the driver's kill"
        driver = start(up, s, spark_log)
        wait_until(lambda: spark_log.read_text().count("up: running") == 2, 600, 0.5,
                   f"the restarted driver's query (log: {spark_log})")  # fmt: skip

        trades = wait_until(lambda: recorded(record, s.symbols, PER_SYMBOL), 300, 0.5,
                            "the simulation")  # fmt: skip
        assert isinstance(trades, list)
        want = expected(trades)
        wait_until(lambda: served(s, spark_log) >= len(want), 600, 0.5,
                   f"{len(want)} trades in raw_trades (log: {spark_log})")  # fmt: skip
        served_s = time.monotonic() - killed_at
        assert_raw_trades_exact(s, want)
        assert_metrics_exact(s, trades)
        assert_ran_on_both_workers(s)

        # Every frame ingestion produced is in Kafka once: trades, malformed frames and the
        # duplicates it saw in the trade topic, a record per gap in the gaps topic.
        assert stop(ingest) == 0, ingest_log.read_text()[-3000:]
        produced = read_status(ingest_status_path(s))
        assert produced is not None and produced["state"] == "stopped", produced
        in_topic = in_kafka(s)
        assert in_topic + in_kafka(s, gaps_topic(s)) == produced["delivered"], produced
        assert produced["ids_unfillable"] == 0 and produced["ids_filled"] > 0, produced
        print(f"killed broker {victim} ({served_at_broker_kill}/{len(want)} trades served), "
              f"new leader after {failover_s:.1f}s; driver killed with {served_at_driver_kill} "
              f"served; all served {served_s:.1f}s after the broker's kill")  # fmt: skip
    finally:
        for proc in (ingest, driver):
            if proc is not None:
                stop(proc)
        if sim is not None:
            sim.stop()
    assert_log_clean(spark_log)
    # each Kafka record once in PostgreSQL: a trade in raw_trades or a row in quarantine
    quarantined = pg_rows(s, "SELECT count(*) FROM quarantine WHERE topic = %s",
                          (s.kafka_topic,))[0][0]  # fmt: skip
    assert quarantined == in_topic - len(want) > 0

    # The Delta log is SeaweedFS's: the server itself lists it.
    listing = s3.shell(s, f"fs.ls /buckets/{BUCKET}/{unique}/lake/silver/_delta_log\n")
    assert f"{0:020d}.json" in listing
    ops_at = time.monotonic()
    assert_lake_and_checkpoints_on_s3(s, prefix, len(want), in_topic)
    print(f"ops commands on the cluster {time.monotonic() - ops_at:.1f}s")
    print(f"test body {time.monotonic() - t_start:.1f}s")


def served(s: Settings, log: Path) -> int:
    """The trades of ``s`` in raw_trades; fails the test at once when the query failed."""
    assert_log_clean(log)
    return len(pg_trades(s, s.symbols))


def assert_raw_trades_exact(s: Settings, want: dict) -> None:
    """raw_trades holds exactly the record, each trade once, every value as generated (the
    ids skipped on the stream came from REST, which has no event time: E is T)."""
    got = pg_trades(s, s.symbols)
    assert got.keys() == want.keys()
    rows = pg_rows(s, "SELECT symbol, trade_id, source FROM raw_trades WHERE symbol = ANY(%s)",
                   (list(s.symbols),))  # fmt: skip
    assert len(rows) == len(want)  # no key twice
    sources = {(r[0], r[1]): r[2] for r in rows}
    assert "backfill" in sources.values()
    for key, (price, qty, maker, trade_ms, event_ms) in want.items():
        if sources[key] == "backfill":
            event_ms = trade_ms
        assert got[key] == (price, qty, maker, trade_ms, event_ms), key


def assert_metrics_exact(s: Settings, record: list[dict]) -> None:
    def problems() -> list[str]:
        return compare_metrics(
            expected_metrics(record, s.window_seconds, latencies(s)), metrics_rows(s)
        )

    try:
        wait_until(lambda: not problems(), 240, 1.0, "metrics equal to the recomputation")
    except pytest.fail.Exception:
        found = problems()
        pytest.fail(f"{len(found)} metric differences, first: {found[:5]}")


def assert_ran_on_both_workers(s: Settings) -> None:
    """Two applications of the driver (the killed and the restarted), the live one with an
    executor on each worker, and tasks finished in both workers' executors."""
    status = spark_cluster.master_status(s)
    assert status is not None
    apps = [a for a in status["activeapps"] + status["completedapps"]
            if a["name"] == "cryptoflow-up"]  # fmt: skip
    active = [a for a in status["activeapps"] if a["name"] == "cryptoflow-up"]
    assert len(apps) >= 2 and len(active) == 1, apps
    assert active[0]["cores"] == 2
    finished = tasks_finished_per_worker(s, {a["id"] for a in apps})
    assert all(n > 0 for n in finished.values()), finished


def assert_log_clean(log: Path) -> None:
    """The query never failed (the supervisor would have restarted it)."""
    text = log.read_text(errors="replace")
    assert "stage=trades failed" not in text, text[-3000:]


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def assert_lake_and_checkpoints_on_s3(s: Settings, prefix: str, trades: int, records: int):
    """The ops commands on the s3a tables and checkpoints, in one more driver on the cluster:
    silver holds each trade once, bronze each Kafka record once, the checkpoint is complete,
    and time travel reads an older version of silver."""
    counts = ("SELECT (SELECT count(*) FROM silver) AS n, (SELECT count(DISTINCT symbol, "
              "trade_id) FROM silver) AS k, (SELECT count(*) FROM bronze) AS b")  # fmt: skip
    commands = {
        "checkpoints": "checkpoints --format json",
        "history": "history silver --limit 100000 --format json",
        "counts": f"query '{counts}' --format json",
        "as_of": "query 'SELECT count(*) AS n FROM silver' --as-of 1 --format json",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.cli_session", *commands.values()], env=env_for(s),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    parsed = cli_session.parse(done.stdout)
    results = {name: _json_lines(parsed[command][1]) for name, command in commands.items()}

    live = {c["job"]: c for c in results["checkpoints"]}["trades"]
    assert live["exists"] == "yes" and live["path"] == f"{prefix}/checkpoints/trades"
    assert live["committed"] == live["last_batch"] and live["committed"] >= 3
    assert live["owner"] == f"kafka:{s.kafka_topic} -> {prefix}/lake/bronze"
    assert f"kafka {s.kafka_topic} " in live["position"]

    # silver: every trade once; bronze: every Kafka record once
    assert results["counts"] == [{"n": trades, "k": trades, "b": records}]

    # Time travel on the s3a table: version 1 holds exactly the rows written up to it.
    written = {e["version"]: e["rows"] or 0 for e in results["history"]}
    assert sum(written.values()) == trades and len([v for v in written.values() if v]) >= 2
    rows_then = sum(rows for version, rows in written.items() if version <= 1)
    assert results["as_of"] == [{"n": rows_then}] and 0 < rows_then < trades
