"""Backing services: the embedded Kafka broker(s) and PostgreSQL cluster, or external ones.

``up`` / ``down`` / ``status`` act only on what is embedded; configured external services are
checked for reachability and otherwise left alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from cryptoflow.core import db
from cryptoflow.core.config import Settings, mask_dsn
from cryptoflow.core.errors import ServiceError
from cryptoflow.core.services import kafka, postgres, s3, spark_cluster

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    mode: str  # embedded | external
    healthy: bool
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def up(s: Settings, progress: Progress = print, started: list[str] | None = None) -> list[str]:
    """Start what is embedded and not running, Kafka and PostgreSQL side by side (they share
    nothing); idempotent. Returns the names this call started. ``started``, when given, gets
    each name as soon as that service runs, so a caller whose call failed half-way still
    knows what it started (and stops it)."""
    mine: list[str] = []
    jobs: list[tuple[str, Callable[[Settings], bool], str]] = []
    if s.embedded_kafka:
        jobs.append(("kafka", kafka.start, f"on {s.bootstrap_servers}"))
    else:
        progress(f"kafka: external at {s.bootstrap_servers}, not started here")
    if s.embedded_postgres:
        jobs.append(("postgres", postgres.start, f"on 127.0.0.1:{s.postgres_port}"))
    else:
        progress(f"postgres: external at {mask_dsn(s.postgres_dsn)}, not started here")
    if s.embedded_s3:  # an s3a:// lake or checkpoint root, no CRYPTOFLOW_S3_ENDPOINT
        jobs.append(("s3", s3.start, f"on {s.s3_url} (SeaweedFS)"))
    elif s.s3a_roots:
        progress(f"s3: external at {s.s3_url}, not started here")
    if s.spark_workers:  # the local Spark cluster (CRYPTOFLOW_SPARK_WORKERS)
        where = f"at {s.spark_master_url} with {s.spark_workers} workers"
        jobs.append(("spark", spark_cluster.start, where))

    def start(name: str, start_fn: Callable[[Settings], bool], where: str) -> None:
        t0 = time.monotonic()
        if not start_fn(s):
            progress(f"{name}: already running {where}")
            return
        mine.append(name)
        if started is not None:
            started.append(name)
        progress(f"{name}: started {where} in {time.monotonic() - t0:.1f}s")

    with ThreadPoolExecutor(max_workers=max(1, len(jobs)), thread_name_prefix="service") as pool:
        futures = [pool.submit(start, *job) for job in jobs]
    for future in futures:
        future.result()  # the first failure, once both are done
    return mine


def down(
    s: Settings,
    progress: Progress = print,
    only: tuple[str, ...] = ("postgres", "kafka", "spark", "s3"),
) -> None:
    """Stop the embedded services (``only`` those named), side by side (the broker's
    controlled shutdown takes seconds); their data stays under the data dir."""
    jobs: list[tuple[str, Callable[[Settings], bool]]] = []
    if s.embedded_postgres and "postgres" in only:
        jobs.append(("postgres", postgres.stop))
    if s.embedded_kafka and "kafka" in only:
        jobs.append(("kafka", kafka.stop))
    if s.embedded_s3 and "s3" in only:
        jobs.append(("s3", s3.stop))
    if "spark" in only and (s.spark_workers or spark_cluster.running(s)):
        jobs.append(("spark", spark_cluster.stop))

    def stop(name: str, stop_fn: Callable[[Settings], bool]) -> None:
        progress(f"{name}: {'stopped' if stop_fn(s) else 'was not running'}")

    with ThreadPoolExecutor(max_workers=max(1, len(jobs)), thread_name_prefix="service") as pool:
        futures = [pool.submit(stop, *job) for job in jobs]
    for future in futures:
        future.result()  # the first failure, once both are done


def embedded_running(s: Settings) -> list[str]:
    """The embedded services running now (whoever started them)."""
    names = ["kafka"] if s.embedded_kafka and kafka.running(s) else []
    names += ["postgres"] if s.embedded_postgres and postgres.running(s) else []
    names += ["s3"] if s.embedded_s3 and s3.running(s) else []
    return names + (["spark"] if spark_cluster.running(s) else [])


def status(s: Settings) -> list[ServiceStatus]:
    """Health of each service, embedded or external."""
    out = [_kafka_status(s)]

    mode = "embedded" if s.embedded_postgres else "external"
    # The embedded cluster is probed as its admin: the app login exists only after setup.
    dsn = postgres.admin_dsn(s) if not s.embedded_postgres or _has_creds(s) else ""
    p_ok, p_detail = False, "not running (cryptoflow services up)"
    if dsn and (not s.embedded_postgres or postgres.running(s)):
        try:
            conn = db.connect(dsn)
            with conn.cursor() as cur:
                cur.execute("SHOW server_version")
                p_detail = f"{mask_dsn(dsn)} PostgreSQL {cur.fetchone()[0]}"
            conn.close()
            p_ok = True
        except ServiceError as e:
            p_detail = str(e)
    out.append(ServiceStatus("postgres", mode, p_ok, p_detail))
    if s.s3a_roots:
        out.append(_s3_status(s))
    if s.spark_workers:
        out.append(ServiceStatus("spark", "embedded", *spark_cluster.health(s)))
    return out


def _kafka_status(s: Settings) -> ServiceStatus:
    """Kafka answers metadata requests; embedded, every broker runs (one down: degraded)."""
    mode = "embedded" if s.embedded_kafka else "external"
    k_ok = kafka.healthy(s, timeout=3)
    k_detail = f"{s.bootstrap_servers} " + ("answers metadata requests" if k_ok else "unreachable")
    alive = kafka.running_nodes(s) if s.embedded_kafka else []
    if s.embedded_kafka and not alive:
        return ServiceStatus("kafka", mode, False, "not running (cryptoflow services up)")
    if s.embedded_kafka and len(alive) < s.kafka_brokers:
        down = ", ".join(str(n) for n in range(1, s.kafka_brokers + 1) if n not in alive)
        k_detail += (
            f"; {len(alive)} of {s.kafka_brokers} brokers running, node(s) {down} down "
            "(cryptoflow services up restarts them)"
        )
        k_ok = False
    elif s.embedded_kafka and s.kafka_brokers > 1:
        k_detail += f"; {s.kafka_brokers} brokers running"
    return ServiceStatus("kafka", mode, k_ok, k_detail)


def _has_creds(s: Settings) -> bool:
    return (postgres.root(s) / "credentials.json").exists()


def _s3_status(s: Settings) -> ServiceStatus:
    ok = s3.healthy(s)
    detail = f"{s.s3_url} " + ("answers S3 requests" if ok else "unreachable")
    if s.embedded_s3 and not s3.running(s):
        detail = "not running (cryptoflow services up)"
    return ServiceStatus("s3", "embedded" if s.embedded_s3 else "external", ok, detail)
