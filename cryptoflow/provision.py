"""Making a machine ready for the pipeline: the steps of ``cryptoflow setup`` (``up`` runs
them too), each idempotent and reporting one line."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import version

from cryptoflow.core import db, services
from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ServiceError
from cryptoflow.core.jars import KAFKA_JARS, S3_JARS, SPARK_JARS, ensure_jars, jar_paths
from cryptoflow.core.jvm import local_fs_jar
from cryptoflow.core.services import kafka, postgres
from cryptoflow.core.services.process import java_binary
from cryptoflow.core.tools import ensure_weed
from expectations.docs_assets import ASSETS, ensure_docs_assets

PINNED = ("pyspark", "delta-spark", "great-expectations", "confluent-kafka", "websockets")


def setup_steps(s: Settings, jars_only: bool = False) -> list[tuple[str, Callable[[], str]]]:
    """The steps of ``cryptoflow setup`` in order: (name, step returning its detail)."""

    def python_deps() -> str:
        return ", ".join(f"{name} {version(name)}" for name in PINNED)

    def jars(js) -> Callable[[], str]:
        def step() -> str:
            _, fetched = ensure_jars(s.jar_cache, js, s.maven_repo)
            n = len(jar_paths(s.jar_cache, js))
            return f"{'fetched' if fetched else 'cached'} {n} jars in {js.directory(s.jar_cache)}"

        return step

    def hadoop_fs() -> str:
        jar = local_fs_jar(s.jar_cache)
        return str(jar) if jar else "no javac: Hadoop's own (a process per file written)"

    def seaweedfs() -> str:
        path, built = ensure_weed(s.tool_cache)
        return f"{'built' if built else 'cached'} {path}"

    def docs_assets() -> str:
        try:
            directory, fetched = ensure_docs_assets(s.jar_cache, s.maven_repo)
        except ServiceError as e:  # Data Docs still build; their pages then use the CDNs
            return f"unavailable, Data Docs will load them from CDNs: {e}"
        return f"{'fetched' if fetched else 'cached'} {len(ASSETS)} assets in {directory}"

    def data_dir() -> str:
        s.data_dir.mkdir(parents=True, exist_ok=True)
        return str(s.data_dir.resolve())

    def start_services() -> str:
        lines: list[str] = []
        services.up(s, progress=lines.append)
        return "; ".join(lines)

    def schema() -> str:
        applied = db.apply_migrations(postgres.admin_dsn(s))
        if s.embedded_postgres:
            postgres.ensure_login_roles(s)
            logins: list[str] = []
        else:
            logins = postgres.ensure_external_logins(s)
        detail = f"applied {', '.join(applied)}" if applied else "up to date"
        return detail + (f"; logins {', '.join(logins)}" if logins else "")

    def topic() -> str:
        created = kafka.ensure_topics(s)
        return ", ".join(f"{t} {'created' if t in created else 'exists'}" for t in s.topics)

    steps = [
        ("java", lambda: java_binary()),
        ("python dependencies", python_deps),
        ("spark jars", jars(SPARK_JARS)),
        ("hadoop local file system", hadoop_fs),
    ]
    if s.embedded_kafka:
        steps.append(("kafka jars", jars(KAFKA_JARS)))
    if s.s3a_roots:  # the lake or the checkpoints on object storage
        steps.append(("s3a jars", jars(S3_JARS)))
    if s.embedded_s3:
        steps.append(("seaweedfs", seaweedfs))
    steps.append(("docs assets", docs_assets))
    if jars_only:
        return steps
    if s.embedded_postgres:
        steps.append(("postgres binaries", lambda: str(postgres.bin_dir())))
    steps += [
        ("data directory", data_dir),
        ("services", start_services),
        ("schema", schema),
        ("kafka topic", topic),
    ]
    return steps


def run_steps(
    settings: Settings,
    jars_only: bool = False,
    progress: Callable[[str], None] = print,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] = (),
) -> None:
    """Run the setup steps in order, one progress line each (``skip`` names steps to leave,
    ``only``, when given, the steps to run)."""
    steps = [
        (name, step)
        for name, step in setup_steps(settings, jars_only)
        if name not in skip and (not only or name in only)
    ]
    for i, (name, step) in enumerate(steps, 1):
        t0 = time.monotonic()
        detail = step()
        progress(f"[{i}/{len(steps)}] {name}: {detail} ({time.monotonic() - t0:.1f}s)")
