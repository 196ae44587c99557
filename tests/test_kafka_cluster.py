"""Issue 21's replicated Kafka: three embedded KRaft brokers, topics with three copies of which
two must acknowledge, and a broker SIGKILLed mid-stream without a trade lost or duplicated.

The integration test runs its own cluster and PostgreSQL (``services.up`` on fresh ports in its
own data dir), not the session's single broker: the simulator, ``cryptoflow ingest`` and
``cryptoflow up --no-ingest`` stream trades through it while the leader of a partition of the
trade topic is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from cryptoflow.core import services
from cryptoflow.core.config import Settings, load_settings
from cryptoflow.core.errors import ConfigError, ServiceError
from cryptoflow.core.jars import KAFKA_JARS, SPARK_JARS, ensure_jars
from cryptoflow.core.services import kafka
from cryptoflow.core.services.process import read_pid
from cryptoflow.supervisor import cryptoflow_argv
from ingestion.simulator import SimulatorOptions, start_simulator_process
from tests.conftest import free_port, make_data_dir, make_settings, wait_until
from tests.pipeline_helpers import expected, isolated, pg_rows, pg_trades
from tests.test_end_to_end import recorded, start, stop


# ----- pure: the cluster's layout and broker configuration
def test_three_brokers_listen_on_ports_two_apart_and_all_vote():
    s = load_settings(environ={"CRYPTOFLOW_KAFKA_BROKERS": "3"}, dotenv=None)
    assert s.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    cluster = kafka.nodes(s)
    assert [(n.node_id, n.port, n.controller_port) for n in cluster] == [
        (1, 19092, 19093), (2, 19094, 19095), (3, 19096, 19097)]  # fmt: skip
    assert kafka.quorum_voters(cluster) == ("1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097")
    # node 1 keeps the single broker's files; the others add their id
    assert (cluster[0].data.name, cluster[0].pid.name) == ("data", "broker.pid")
    assert (cluster[2].data.name, cluster[2].pid.name) == ("data-3", "broker-3.pid")
    props = dict(
        line.split("=", 1)
        for line in kafka.server_properties(cluster[1], "V", 3, 4).splitlines()
        if line
    )
    assert props["node.id"] == "2" and props["controller.quorum.voters"] == "V"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    assert props["log.dirs"].endswith("/kafka/data-2")
    assert (props["default.replication.factor"], props["min.insync.replicas"]) == ("3", "2")
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    assert props["num.partitions"] == "4"


def test_replication_is_three_copies_at_most_two_in_sync_from_three():
    assert [kafka.replication(n) for n in (1, 2, 3, 5)] == [(1, 1), (2, 1), (3, 2), (3, 2)]
    one = load_settings(environ={}, dotenv=None)
    assert one.bootstrap_servers == "127.0.0.1:19092"  # a single broker as before
    assert "min.insync.replicas=1" in kafka.server_properties(kafka.nodes(one)[0], "V", 1, 3)


def test_broker_counts_and_ports_that_cannot_work_are_config_errors():
    for env in ({"CRYPTOFLOW_KAFKA_BROKERS": "0"}, {"CRYPTOFLOW_KAFKA_BROKERS": "10"},
                {"CRYPTOFLOW_KAFKA_BROKERS": "3", "CRYPTOFLOW_KAFKA_CONTROLLER_PORT": "19094"},
                {"CRYPTOFLOW_KAFKA_BROKERS": "3", "CRYPTOFLOW_KAFKA_PORT": "65534"}):  # fmt: skip
        with pytest.raises(ConfigError, match="CRYPTOFLOW_KAFKA_"):
            load_settings(environ=env, dotenv=None)


def test_storage_formatted_for_another_broker_count_is_refused(tmp_path):
    s = load_settings(environ={}, dotenv=None, data_dir=tmp_path, kafka_brokers=3)
    kafka.root(s).mkdir(parents=True)
    (kafka.root(s) / "cluster.properties").write_text("cluster.id=abc\nbrokers=1\n")
    with pytest.raises(ServiceError, match="cluster of 1 broker"):
        kafka._cluster_id_of(s)
    assert kafka._cluster_id_of(s.replace(kafka_brokers=1)) == "abc"


# ----- integration: a broker SIGKILLed mid-stream
PER_SYMBOL = 900  # two symbols at 60 trades/s: 30 s of streaming
RATE = 60


def free_port_block(n: int) -> int:
    """A port p with p .. p+n-1 all free to bind (the brokers' and controllers' ports
    interleave)."""
    for _ in range(50):
        base = free_port()
        if base + n <= 65535 and all(bindable(base + i) for i in range(n)):
            return base
    raise AssertionError(f"no {n} consecutive free ports")


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def in_kafka(s: Settings) -> int:
    """Records in the trade topic (the sum of its partitions' high watermarks)."""
    consumer = Consumer({"bootstrap.servers": s.bootstrap_servers, "group.id": "count",
                         "log_level": 0})  # fmt: skip
    try:
        parts = consumer.list_topics(s.kafka_topic, timeout=10).topics[s.kafka_topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(s.kafka_topic, p), timeout=10)[1]
            for p in parts
        )
    finally:
        consumer.close()


def leader_of(s: Settings, partition: int) -> int:
    return _partition(s, partition).leader


def isr_of(s: Settings, partition: int) -> list[int]:
    return list(_partition(s, partition).isrs)


def _partition(s: Settings, partition: int):
    admin = AdminClient({"bootstrap.servers": s.bootstrap_servers, "log_level": 0})
    md = admin.list_topics(s.kafka_topic, timeout=10)
    return md.topics[s.kafka_topic].partitions[partition]


@pytest.fixture
def cluster() -> Iterator[Settings]:
    """Three brokers and PostgreSQL of this test alone, stopped and removed after it."""
    data_dir = make_data_dir("cryptoflow-cluster-")
    base = free_port_block(6)
    s = make_settings(data_dir, kafka_brokers=3, kafka_port=base, kafka_controller_port=base + 1,
                      kafka_heap="256m")  # fmt: skip
    ensure_jars(s.jar_cache, SPARK_JARS, s.maven_repo)
    ensure_jars(s.jar_cache, KAFKA_JARS, s.maven_repo)
    try:
        t0 = time.monotonic()
        services.up(s, progress=lambda _: None)
        print(f"services up (3 brokers + PostgreSQL) in {time.monotonic() - t0:.1f}s")
        yield s
    finally:
        services.down(s, progress=lambda _: None)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.integration
def test_a_broker_killed_mid_stream_loses_and_duplicates_nothing(cluster, unique, tmp_path):
    t_start = time.monotonic()
    s = isolated(cluster, unique, tmp_path).replace(source="sim", sim_port=free_port())
    replicas = (
        AdminClient({"bootstrap.servers": s.bootstrap_servers})
        .list_topics(s.kafka_topic, timeout=10)
        .topics[s.kafka_topic]
        .partitions[0]
    )
    assert len(replicas.replicas) == 3
    spark_log, ingest_log = tmp_path / "up.log", tmp_path / "ingest.log"
    jobs = start(cryptoflow_argv("up", "--no-ingest", "--source", "sim"), s, spark_log)
    sim = ingest = None
    try:
        wait_until(lambda: "up: running" in spark_log.read_text(), 600, 0.5,
                   f"the pipeline's query (log: {spark_log})")  # fmt: skip
        record = tmp_path / "record.jsonl"
        sim = start_simulator_process(
            s, SimulatorOptions(seed=21, rate=RATE, max_trades=PER_SYMBOL, record=record,
                                wait_for_client=True),
        )  # fmt: skip
        ingest = start(cryptoflow_argv("ingest", "--source", "sim"), s, ingest_log)
        total = PER_SYMBOL * len(s.symbols)
        # Mid-stream: a quarter in Kafka (the query runs; under load its first batch may
        # still be planning, so the kill does not wait for rows in raw_trades).
        wait_until(lambda: in_kafka(s) >= total // 4, 180, 0.2, "a quarter of the trades in Kafka")
        victim = leader_of(s, 0)
        node = next(n for n in kafka.nodes(s) if n.node_id == victim)
        pid = read_pid(node.pid)
        assert pid
        os.killpg(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        assert not recorded(record, s.symbols, PER_SYMBOL), "the stream ended before the kill"
        served_at_kill = len(pg_trades(s, s.symbols))
        # a new leader from the in-sync replicas, and the ISR without the dead broker
        wait_until(lambda: leader_of(s, 0) not in (victim, -1) and victim not in isr_of(s, 0),
                   60, 0.5, "a new leader and the ISR without the dead broker")  # fmt: skip
        failover_s = time.monotonic() - killed_at
        (status,) = (x for x in services.status(s) if x.name == "kafka")
        assert not status.healthy and f"node(s) {victim} down" in status.detail, status
        trades = wait_until(lambda: recorded(record, s.symbols, PER_SYMBOL), 180, 0.5,
                            "the simulation")  # fmt: skip
        assert isinstance(trades, list)
        want = expected(trades)
        wait_until(lambda: len(pg_trades(s, s.symbols)) >= len(want), 600, 0.5,
                   f"{len(want)} trades in raw_trades (log: {spark_log})")  # fmt: skip
        served_s = time.monotonic() - killed_at
        assert pg_trades(s, s.symbols) == want  # nothing lost, every value as generated
        rows, keys = pg_rows(
            s, "SELECT count(*), count(DISTINCT (symbol, trade_id)) FROM raw_trades "
            "WHERE symbol = ANY(%s)", (list(s.symbols),),
        )[0]  # fmt: skip
        assert rows == keys == len(want)
        # the idempotent producer wrote each frame once, across the leader's death
        assert in_kafka(s) == len(want)
        assert stop(ingest) == 0, ingest_log.read_text()[-3000:]
        took = time.monotonic() - t_start
        print(f"killed broker {victim} with {served_at_kill}/{len(want)} trades served; new "
              f"leader after {failover_s:.1f}s; all served {served_s:.1f}s after the kill; "
              f"test body {took:.1f}s")  # fmt: skip
    finally:
        for proc in (ingest, jobs):
            if proc is not None:
                stop(proc)
        if sim is not None:
            sim.stop()
    assert_log_clean(Path(spark_log))


def assert_log_clean(log: Path) -> None:
    """The query never failed (the supervisor would have restarted it)."""
    text = log.read_text(errors="replace")
    assert "stage=trades failed" not in text, text[-3000:]


def test_the_producer_waits_for_the_in_sync_copies_and_writes_each_frame_once():
    from ingestion.producer import producer_config

    s = load_settings(environ={"CRYPTOFLOW_KAFKA_BROKERS": "3"}, dotenv=None)
    config = producer_config(s)
    assert config["bootstrap.servers"] == s.bootstrap_servers  # every broker, not just one
    assert (config["acks"], config["enable.idempotence"]) == ("all", True)
    assert config["message.timeout.ms"] == 0  # a frame is never given up on
