"""The embedded Apache Kafka broker: one KRaft node (broker + controller) under the data dir."""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
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


@dataclass(frozen=True)
class KafkaPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pid(self) -> Path:
        return self.root / "broker.pid"

    @property
    def log(self) -> Path:
        return self.root / "broker.log"


def paths(settings: Settings) -> KafkaPaths:
    return KafkaPaths(settings.data_dir.resolve() / "kafka")


def _server_properties(s: Settings, p: KafkaPaths) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{s.kafka_controller_port}",
            f"listeners=PLAINTEXT://{HOST}:{s.kafka_port},CONTROLLER://{HOST}:{s.kafka_controller_port}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{s.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={p.data}",
            f"num.partitions={s.kafka_partitions}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=2",
            "num.io.threads=2",
            "num.recovery.threads.per.data.dir=1",
            "message.max.bytes=10485760",
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


def _java_cmd(s: Settings, main: str, *args: str) -> list[str]:
    p = paths(s)
    classpath = os.pathsep.join(str(j) for j in jar_paths(s.jar_cache, KAFKA_JARS))
    return [
        java_binary(),
        f"-Xmx{s.kafka_heap}",
        f"-Xms{min(256, _megabytes(s.kafka_heap))}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={p.log4j}",
        "-cp",
        classpath,
        main,
        *args,
    ]


def _megabytes(heap: str) -> int:
    unit = heap[-1].lower()
    n = int(heap[:-1]) if unit in "kmg" else int(heap)
    return {"k": n // 1024, "m": n, "g": n * 1024}.get(unit, n // (1024 * 1024))


def running(s: Settings) -> bool:
    return pid_alive(read_pid(paths(s).pid))


def start(s: Settings) -> bool:
    """Start the broker unless it already runs. Returns True when it was started."""
    p = paths(s)
    if running(s):
        return False
    ensure_port_free(HOST, s.kafka_port, "the Kafka broker", "CRYPTOFLOW_KAFKA_PORT")
    ensure_port_free(
        HOST, s.kafka_controller_port, "the Kafka controller", "CRYPTOFLOW_KAFKA_CONTROLLER_PORT"
    )
    p.root.mkdir(parents=True, exist_ok=True)
    p.config.write_text(_server_properties(s, p))
    p.log4j.write_text(_LOG4J.format(log=p.log))
    if not (p.data / "meta.properties").exists():
        cluster_id = _cluster_id()
        fmt = subprocess.run(
            _java_cmd(
                s, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(p.config)
            ),
            capture_output=True,
            text=True,
            start_new_session=True,  # a stop signal to `up` is not for it
        )
        if fmt.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed: {fmt.stderr.strip()[-400:]}")
    with open(p.root / "broker.stdout", "ab") as out:
        proc = subprocess.Popen(
            _java_cmd(s, "kafka.Kafka", str(p.config)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    p.pid.write_text(f"{proc.pid}\n")

    def ready() -> bool:
        if proc.poll() is not None:
            raise ServiceError(
                f"the Kafka broker exited with code {proc.returncode} while starting; see {p.log}"
            )
        return port_open(HOST, s.kafka_port) and healthy(s)

    wait_for(ready, 120, f"the Kafka broker on {HOST}:{s.kafka_port}", interval=0.5)
    log.info("kafka started pid=%d port=%d", proc.pid, s.kafka_port)
    return True


def _cluster_id() -> str:
    """A random KRaft cluster id (base64 of a UUID) that the formatter's argument parser
    cannot mistake for an option, i.e. not starting with ``-``."""
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def stop(s: Settings) -> bool:
    pid = read_pid(paths(s).pid)
    if not pid_alive(pid):
        return False
    assert pid is not None
    stop_pid(pid, timeout=60)
    paths(s).pid.unlink(missing_ok=True)
    return True


def healthy(s: Settings, timeout: float = 5.0) -> bool:
    """True when the cluster answers a metadata request."""
    try:
        admin = AdminClient({"bootstrap.servers": s.bootstrap_servers, "log_level": 0})
        md = admin.list_topics(timeout=timeout)
        return bool(md.brokers)
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        return False


def ensure_topics(s: Settings, extra: dict[str, int] | None = None) -> list[str]:
    """Create the raw topic of every chosen stream kind (``s.topics``, configured partitions
    and retention), and ``extra`` topics (name -> partitions), where absent. Returns the
    topics created."""
    wanted = {t: s.kafka_partitions for t in s.topics} | dict(extra or {})
    return [t for t, n in wanted.items() if ensure_topic(s, t, partitions=n)]


def ensure_topic(s: Settings, topic: str | None = None, partitions: int | None = None) -> bool:
    """Create the topic (configured partitions and retention) if absent. True when created."""
    topic = topic or s.kafka_topic
    admin = AdminClient({"bootstrap.servers": s.bootstrap_servers})
    try:
        existing = admin.list_topics(timeout=15).topics
    except Exception as e:  # noqa: BLE001
        raise ServiceError(f"Kafka at {s.bootstrap_servers} is unreachable: {e}") from e
    if topic in existing:
        return False
    new = NewTopic(
        topic,
        num_partitions=partitions or s.kafka_partitions,
        replication_factor=-1,
        config={"retention.ms": str(s.kafka_retention_ms), "compression.type": "producer"},
    )
    for fut in admin.create_topics([new], request_timeout=30).values():
        try:
            fut.result()
        except Exception as e:  # noqa: BLE001
            if "TOPIC_ALREADY_EXISTS" in str(e):
                return False
            raise ServiceError(f"could not create Kafka topic {topic}: {e}") from e
    return True
