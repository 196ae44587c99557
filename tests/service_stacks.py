"""Real services for the scale-out tests, started by the project's own service code.

Settings builders add a part to a ``Settings``: three KRaft brokers (``kafka_cluster_settings``,
with PostgreSQL, in a data dir of their own), the lake and checkpoints on the embedded
SeaweedFS (``with_s3_lake``), a local standalone Spark master with two workers
(``with_spark_cluster``). ``services_running`` starts what the settings name and is not
running yet (``services.up``, side by side) and stops exactly that again. Beside them, the
Kafka probes the broker-kill test needs (leader, ISR, records in a topic) and the tasks a
cluster's executors finished.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from cryptoflow.core import services
from cryptoflow.core.config import Settings
from cryptoflow.core.jars import KAFKA_JARS, S3_JARS, SPARK_JARS, ensure_jars
from cryptoflow.core.services import kafka, postgres, s3, spark_cluster
from cryptoflow.core.tools import ensure_weed
from tests.conftest import free_port, free_ports, make_settings, wait_until

# ----- settings


def _ports_in_use(s: Settings) -> set[int]:
    """Every port ``s`` names for an embedded service (the brokers' and controllers' too)."""
    ports = {s.postgres_port, s.sim_port, s.s3_port, s.spark_master_port, s.spark_master_ui_port}
    return ports | {p for n in kafka.nodes(s) for p in (n.port, n.controller_port)}


def _fresh_ports(s: Settings, n: int) -> list[int]:
    """``n`` free ports that ``s`` does not name already (a port that a service of ``s``
    will bind later is free now, so the kernel may hand it out)."""
    for _ in range(50):
        ports = free_ports(n)
        if not _ports_in_use(s).intersection(ports):
            return ports
    raise AssertionError(f"no {n} free ports outside {sorted(_ports_in_use(s))}")


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(n: int) -> int:
    """A port p with p .. p+n-1 all free to bind (the brokers' and controllers' ports
    interleave)."""
    for _ in range(50):
        base = free_port()
        if base + n <= 65535 and all(bindable(base + i) for i in range(n)):
            return base
    raise AssertionError(f"no {n} consecutive free ports")


def kafka_cluster_settings(data_dir: Path) -> Settings:
    """Test settings (``make_settings``) for three embedded brokers and PostgreSQL in
    ``data_dir``, every port free and none drawn twice."""
    for _ in range(50):
        base = free_port_block(6)
        s = make_settings(data_dir, kafka_brokers=3, kafka_port=base,
                          kafka_controller_port=base + 1, kafka_heap="256m")  # fmt: skip
        if not {s.postgres_port, s.sim_port}.intersection(range(base, base + 6)):
            return s
    raise AssertionError("no free ports for three brokers beside PostgreSQL's")


def with_s3_lake(s: Settings, bucket: str) -> Settings:
    """``s`` with the lake and the checkpoints in ``bucket`` of the embedded SeaweedFS, on a
    free port (the weed binary from the tool cache, ``CRYPTOFLOW_TOOL_CACHE`` in the tests'
    environment when set)."""
    tool_cache = Path(os.environ.get("CRYPTOFLOW_TOOL_CACHE", str(s.tool_cache)))
    (port,) = _fresh_ports(s, 1)
    return s.replace(lake_root=f"s3a://{bucket}/lake", checkpoint_root=f"s3a://{bucket}/checkpoints",
                     s3_port=port, tool_cache=tool_cache)  # fmt: skip


def with_spark_cluster(s: Settings) -> Settings:
    """``s`` with a local standalone cluster: a master and two workers of one core each."""
    master, ui = _fresh_ports(s, 2)
    return s.replace(spark_workers=2, spark_master_port=master, spark_master_ui_port=ui)


# ----- the services


def _running(s: Settings, name: str) -> bool:
    return {
        "kafka": lambda: bool(kafka.running_nodes(s)),
        "postgres": lambda: postgres.running(s),
        "s3": lambda: s3.running(s),
        "spark": lambda: spark_cluster.running(s) or bool(spark_cluster.running_workers(s)),
    }[name]()


@contextlib.contextmanager
def services_running(s: Settings) -> Iterator[list[str]]:
    """Start the embedded services of ``s`` that are not running (``services.up``: the
    brokers, PostgreSQL, SeaweedFS and the Spark cluster side by side); yields the names this
    started, and stops those, and only those, at the end."""
    ensure_jars(s.jar_cache, SPARK_JARS, s.maven_repo)
    ensure_jars(s.jar_cache, KAFKA_JARS, s.maven_repo)
    if s.s3a_roots:
        ensure_jars(s.jar_cache, S3_JARS, s.maven_repo)
    if s.embedded_s3:
        ensure_weed(s.tool_cache)  # built once per machine, then cached
    started: list[str] = []
    try:
        services.up(s, progress=lambda _: None, started=started)
        yield started
    finally:
        services.down(s, progress=lambda _: None, only=tuple(started))
    still = [name for name in started if _running(s, name)]
    assert not still, f"still running after services.down: {still}"


# ----- Kafka probes


def in_kafka(s: Settings, topic: str | None = None) -> int:
    """Records in ``topic`` (default: the trade topic): the sum of its partitions' high
    watermarks."""
    topic = topic or s.kafka_topic
    consumer = Consumer({"bootstrap.servers": s.bootstrap_servers, "group.id": "count",
                         "log_level": 0})  # fmt: skip
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
        )
    finally:
        consumer.close()


def partition_of(s: Settings, partition: int):
    """The trade topic's ``partition`` in the cluster's metadata (leader, replicas, isrs)."""
    admin = AdminClient({"bootstrap.servers": s.bootstrap_servers, "log_level": 0})
    found = {}

    def known() -> bool:  # each broker learns a new topic's metadata in its own time
        meta = admin.list_topics(s.kafka_topic, timeout=10).topics.get(s.kafka_topic)
        found.update(meta.partitions if meta else {})
        return partition in found

    wait_until(known, 60, 0.2, f"partition {partition} of {s.kafka_topic} in the metadata")
    return found[partition]


def leader_of(s: Settings, partition: int) -> int:
    return partition_of(s, partition).leader


def isr_of(s: Settings, partition: int) -> list[int]:
    return list(partition_of(s, partition).isrs)


# ----- the Spark cluster


def tasks_finished_per_worker(s: Settings, app_ids: set[str]) -> dict[int, int]:
    """Tasks that executors of the applications ``app_ids`` finished, per worker (their logs
    in the workers' work dirs)."""
    finished = {}
    for n in range(1, s.spark_workers + 1):
        work = spark_cluster.worker_dir(s, n) / "work"
        logs = [p for app in app_ids for p in (work / app).glob("*/stderr")]
        finished[n] = sum(p.read_text(errors="replace").count("Finished task") for p in logs)
    return finished
