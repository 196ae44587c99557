"""``cryptoflow setup``: everything the pipeline needs, idempotently, a progress line per step."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from importlib.metadata import version

from cryptoflow import db, services
from cryptoflow.config import Settings
from cryptoflow.errors import ServiceError
from cryptoflow.jars import KAFKA_JARS, SPARK_JARS, ensure_jars, jar_paths
from cryptoflow.jvm import local_fs_jar
from cryptoflow.services import kafka, postgres
from cryptoflow.services.process import java_binary

PINNED = ("pyspark", "delta-spark", "great-expectations", "confluent-kafka", "websockets")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "setup",
        help="check dependencies, fetch JARs, create data dir, start services, apply schema",
        description=(
            "Prepare everything the pipeline needs; safe to run again. Checks Java and the "
            "Python dependencies, resolves the Spark (Delta, Kafka connector) and Kafka broker "
            "JARs and the Data Docs' JavaScript/CSS WebJars from Maven Central into "
            "CRYPTOFLOW_JAR_CACHE (once; offline afterwards), "
            "creates the data directory, starts the embedded services, applies the SQL "
            "migrations, creates the pipeline and analyst logins and the raw topic. Services "
            "are left running."
        ),
    )
    p.add_argument(
        "--jars-only",
        action="store_true",
        help="only resolve the JARs this configuration needs into CRYPTOFLOW_JAR_CACHE "
        "(for image builds: no services, no schema)",
    )
    p.set_defaults(handler=run)


def _steps(s: Settings, jars_only: bool = False) -> list[tuple[str, Callable[[], str]]]:
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

    def docs_assets() -> str:
        from expectations.docs_assets import ASSETS, ensure_docs_assets

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
        created = kafka.ensure_topic(s)
        return f"{s.kafka_topic} {'created' if created else 'exists'}"

    steps = [
        ("java", lambda: java_binary()),
        ("python dependencies", python_deps),
        ("spark jars", jars(SPARK_JARS)),
        ("hadoop local file system", hadoop_fs),
    ]
    if s.embedded_kafka:
        steps.append(("kafka jars", jars(KAFKA_JARS)))
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
        for name, step in _steps(settings, jars_only)
        if name not in skip and (not only or name in only)
    ]
    for i, (name, step) in enumerate(steps, 1):
        t0 = time.monotonic()
        detail = step()
        progress(f"[{i}/{len(steps)}] {name}: {detail} ({time.monotonic() - t0:.1f}s)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    run_steps(settings, jars_only=args.jars_only, progress=lambda line: print(line, flush=True))
    print("setup complete")
    return 0
