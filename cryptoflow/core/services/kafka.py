"""The embedded Apache Kafka cluster: ``kafka_brokers`` KRaft nodes (each a broker and a
controller voter) on loopback, their files under ``<data_dir>/kafka``.

Node 1 keeps the single broker's file names (``server.properties``, ``data``, ``broker.pid``,
``broker.log``); node n > 1 adds ``-n`` to each (``data-2``, ``broker-2.pid``...). Node n
listens on ``kafka_port + 2(n-1)`` and its controller on ``kafka_controller_port + 2(n-1)``.
``cluster.properties`` records the cluster id and the broker count its storage was formatted
for: a static KRaft quorum cannot change its voters, so another count needs a fresh data dir.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ServiceError
from cryptoflow.core.jars import KAFKA_JARS, jar_paths
from cryptoflow.core.services.process import (
    ensure_port_free,
    java_binary,
    pid_alive,
    port_open,
    read_pid,
    stop_pid,
    wait_for,
)

log = logging.getLogger(__name__)
HOST = "127.0.0.1"
#: Most copies of a topic's partition: three survive one broker's death with two in sync.
MAX_REPLICATION = 3


@dataclass(frozen=True)
class KafkaNode:
    """One embedded KRaft node (broker + controller): its id, ports and files."""

    node_id: int
    port: int
    controller_port: int
    root: Path

    def _file(self, stem: str, ext: str = "") -> Path:
        suffix = "" if self.node_id == 1 else f"-{self.node_id}"
        return self.root / f"{stem}{suffix}{ext}"

    @property
    def config(self) -> Path:
        return self._file("server", ".properties")

    @property
    def log4j(self) -> Path:
        return self._file("log4j2", ".properties")

    @property
    def data(self) -> Path:
        return self._file("data")

    @property
    def pid(self) -> Path:
        return self._file("broker", ".pid")

    @property
    def log(self) -> Path:
        return self._file("broker", ".log")

    @property
    def stdout(self) -> Path:
        return self._file("broker", ".stdout")

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


def root(s: Settings) -> Path:
    return s.data_dir.resolve() / "kafka"


def nodes(s: Settings) -> list[KafkaNode]:
    """The embedded nodes, node ids from 1."""
    ports = zip(s.kafka_broker_ports, s.kafka_controller_ports, strict=True)
    return [KafkaNode(n, port, cport, root(s)) for n, (port, cport) in enumerate(ports, 1)]


def replication(brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of topics on a cluster of ``brokers``: three
    copies at most; with three, an acknowledged record is on two, so one broker may die."""
    factor = min(MAX_REPLICATION, brokers)
    return factor, 2 if factor >= 3 else 1


def quorum_voters(cluster: list[KafkaNode]) -> str:
    """``controller.quorum.voters``: every node votes (``id@host:controller_port``)."""
    return ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in cluster)


def server_properties(node: KafkaNode, voters: str, brokers: int, partitions: int) -> str:
    """The broker configuration of ``node`` in a cluster of ``brokers`` nodes."""
    factor, min_isr = replication(brokers)
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{node.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={node.data}",
            f"num.partitions={partitions}",
            f"default.replication.factor={factor}",
            f"min.insync.replicas={min_isr}",
            "unclean.leader.election.enable=false",
            f"offsets.topic.replication.factor={factor}",
            f"transaction.state.log.replication.factor={factor}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={factor}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=2",
            "num.io.threads=2",
            "num.replica.fetchers=1",
            "num.recovery.threads.per.data.dir=1",
            "message.max.bytes=10485760",
            "replica.fetch.max.bytes=10485760",
            "auto.create.topics.enable=false",
            "",
        ]
    )


_LOG4J = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{ISO8601}} %-5p [%c{{1}}] %m%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.server.name = org.apache.kafka.server
logger.server.level = INFO
"""


def _java_cmd(s: Settings, node: KafkaNode, main: str, *args: str) -> list[str]:
    classpath = os.pathsep.join(str(j) for j in jar_paths(s.jar_cache, KAFKA_JARS))
    return [
        java_binary(),
        f"-Xmx{s.kafka_heap}",
        f"-Xms{min(256, _megabytes(s.kafka_heap))}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={node.log4j}",
        "-cp",
        classpath,
        main,
        *args,
    ]


def _megabytes(heap: str) -> int:
    unit = heap[-1].lower()
    n = int(heap[:-1]) if unit in "kmg" else int(heap)
    return {"k": n // 1024, "m": n, "g": n * 1024}.get(unit, n // (1024 * 1024))


def running_nodes(s: Settings) -> list[int]:
    """Ids of the embedded nodes whose process runs."""
    return [n.node_id for n in nodes(s) if pid_alive(read_pid(n.pid))]


def running(s: Settings) -> bool:
    """True when any embedded node runs."""
    return bool(running_nodes(s))


def start(s: Settings) -> bool:
    """Start every embedded node that does not run (all of them, or one that died), and wait
    until the cluster lists all its brokers. Returns True when it started any."""
    cluster = nodes(s)
    down = [n for n in cluster if not pid_alive(read_pid(n.pid))]
    if not down:
        return False
    for n in down:
        which = "" if n.node_id == 1 else f" (node {n.node_id}: the setting + {2 * n.node_id - 2})"
        ensure_port_free(HOST, n.port, "the Kafka broker", "CRYPTOFLOW_KAFKA_PORT" + which)
        ensure_port_free(
            HOST, n.controller_port, "the Kafka controller",
            "CRYPTOFLOW_KAFKA_CONTROLLER_PORT" + which,
        )  # fmt: skip
    root(s).mkdir(parents=True, exist_ok=True)
    cluster_id = _cluster_id_of(s)
    voters = quorum_voters(cluster)
    for n in down:
        n.config.write_text(server_properties(n, voters, s.kafka_brokers, s.kafka_partitions))
        n.log4j.write_text(_LOG4J.format(log=n.log))
    unformatted = [n for n in down if not (n.data / "meta.properties").exists()]
    with ThreadPoolExecutor(max_workers=max(1, len(unformatted))) as pool:
        list(pool.map(lambda n: _format(s, n, cluster_id), unformatted))
    procs = {n.node_id: _launch(s, n) for n in down}

    def ready() -> bool:
        for n in down:
            if procs[n.node_id].poll() is not None:
                raise ServiceError(
                    f"Kafka broker {n.node_id} exited with code {procs[n.node_id].returncode} "
                    f"while starting{_last_error(n.log)}; see {n.log}"
                )
        return all(port_open(HOST, n.port) for n in down) and live_brokers(s) == len(cluster)

    try:
        wait_for(ready, 60 + 60 * len(down), f"the Kafka brokers on {s.bootstrap_servers}", 0.5)
    except ServiceError:  # stop what this call started: no caller knows of it
        _stop_nodes([(n, procs[n.node_id].pid) for n in down])
        raise
    for n in down:
        log.info("kafka started node=%d pid=%d port=%d", n.node_id, procs[n.node_id].pid, n.port)
    return True


def _last_error(log_file: Path) -> str:
    """``: <the log's last ERROR line>``, or nothing."""
    try:
        errors = [line for line in log_file.read_text(errors="replace").splitlines()
                  if " ERROR " in line]  # fmt: skip
    except OSError:
        return ""
    return f": {errors[-1][:300]}" if errors else ""


def _launch(s: Settings, node: KafkaNode) -> subprocess.Popen:
    with open(node.stdout, "ab") as out:
        proc = subprocess.Popen(
            _java_cmd(s, node, "kafka.Kafka", str(node.config)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    node.pid.write_text(f"{proc.pid}\n")
    return proc


def _format(s: Settings, node: KafkaNode, cluster_id: str) -> None:
    fmt = subprocess.run(
        _java_cmd(s, node, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                  "-c", str(node.config)),
        capture_output=True,
        text=True,
        start_new_session=True,  # a stop signal to `up` is not for it
    )  # fmt: skip
    if fmt.returncode != 0:
        raise ServiceError(
            f"formatting Kafka storage of node {node.node_id} failed: {fmt.stderr.strip()[-400:]}"
        )


def _cluster_id_of(s: Settings) -> str:
    """The id of the cluster under the data dir (recorded with its broker count), or a new
    one; a ServiceError when that storage was formatted for another broker count."""
    record = root(s) / "cluster.properties"
    props = _properties(record)
    if not props:  # a single broker's storage from before the count was recorded
        props = _properties(nodes(s)[0].data / "meta.properties")
        if props.get("cluster.id"):
            props["brokers"] = "1"
    if props.get("cluster.id"):
        if int(props.get("brokers", "1")) != s.kafka_brokers:
            raise ServiceError(
                f"the Kafka storage in {root(s)} is a cluster of {props.get('brokers', '1')} "
                f"broker(s), CRYPTOFLOW_KAFKA_BROKERS={s.kafka_brokers} needs another: set it "
                f"back, or stop the brokers and move {root(s)} aside (its topics go with it)"
            )
        return props["cluster.id"]
    cluster_id = _cluster_id()
    record.write_text(f"cluster.id={cluster_id}\nbrokers={s.kafka_brokers}\n")
    return cluster_id


def _properties(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.partition("=") for line in lines if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, _, v in pairs}


def _cluster_id() -> str:
    """A random KRaft cluster id (base64 of a UUID) that the formatter's argument parser
    cannot mistake for an option, i.e. not starting with ``-``."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def stop(s: Settings) -> bool:
    """Stop every embedded node that runs, side by side. True when any ran."""
    alive = [(n, pid) for n in nodes(s) if pid_alive(pid := read_pid(n.pid)) and pid]
    _stop_nodes(alive)
    return bool(alive)


def _stop_nodes(alive: list[tuple[KafkaNode, int]]) -> None:
    """SIGTERM the nodes side by side (the last one's controlled shutdown finds no quorum
    when the others are gone first), SIGKILL what still runs after a minute."""

    def stop_node(node: KafkaNode, pid: int) -> None:
        stop_pid(pid, timeout=60)
        node.pid.unlink(missing_ok=True)

    with ThreadPoolExecutor(max_workers=max(1, len(alive))) as pool:
        list(pool.map(lambda a: stop_node(*a), alive))


def live_brokers(s: Settings, timeout: float = 5.0) -> int:
    """Brokers the cluster's metadata lists (0 when it does not answer)."""
    try:
        admin = AdminClient({"bootstrap.servers": s.bootstrap_servers, "log_level": 0})
        return len(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # noqa: BLE001 - any failure means "none"
        return 0


def healthy(s: Settings, timeout: float = 5.0) -> bool:
    """True when the cluster answers a metadata request."""
    return live_brokers(s, timeout) > 0


def ensure_topics(s: Settings, extra: dict[str, int] | None = None) -> list[str]:
    """Create the raw topic of every chosen stream kind (``s.topics``, configured partitions
    and retention), and ``extra`` topics (name -> partitions), where absent. Returns the
    topics created."""
    wanted = {t: s.kafka_partitions for t in s.topics} | dict(extra or {})
    return [t for t, n in wanted.items() if ensure_topic(s, t, partitions=n)]


def has_leaders(admin: AdminClient, topic: str, partitions: int) -> bool:
    """True when the broker ``admin`` asks knows ``topic`` with all its ``partitions``
    led: a topic the controller created reaches the other brokers' metadata a moment later."""
    meta = admin.list_topics(topic, timeout=10).topics.get(topic)
    parts = meta.partitions if meta else {}
    return len(parts) == partitions and all(p.leader >= 0 for p in parts.values())


def ensure_topic(s: Settings, topic: str | None = None, partitions: int | None = None) -> bool:
    """Create the topic (configured partitions and retention, ``replication`` of the cluster:
    the embedded brokers, or those an external cluster lists) if absent. True when created."""
    topic = topic or s.kafka_topic
    admin = AdminClient({"bootstrap.servers": s.bootstrap_servers})
    try:
        metadata = admin.list_topics(timeout=15)
    except Exception as e:  # noqa: BLE001
        raise ServiceError(f"Kafka at {s.bootstrap_servers} is unreachable: {e}") from e
    if topic in metadata.topics:
        return False
    brokers = s.kafka_brokers if s.embedded_kafka else max(1, len(metadata.brokers))
    factor, min_isr = replication(brokers)
    new = NewTopic(
        topic,
        num_partitions=partitions or s.kafka_partitions,
        replication_factor=factor,
        config={
            "retention.ms": str(s.kafka_retention_ms),
            "compression.type": "producer",
            "min.insync.replicas": str(min_isr),
        },
    )
    for fut in admin.create_topics([new], request_timeout=30).values():
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001
            if "TOPIC_ALREADY_EXISTS" in str(e):
                return False
            raise ServiceError(f"could not create Kafka topic {topic}: {e}") from e
    wait_for(lambda: has_leaders(admin, topic, new.num_partitions), 60,
             f"every partition of the new topic {topic} to have a leader")  # fmt: skip
    log.info("kafka topic created topic=%s partitions=%d replication=%d min_insync=%d",
             topic, new.num_partitions, factor, min_isr)  # fmt: skip
    return True
