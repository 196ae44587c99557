"""Shared fixtures: real services in a throwaway data dir on free ports, and one Spark session.

The whole test session shares one embedded Kafka broker, one PostgreSQL cluster and one
local Spark session; tests isolate themselves by topic, table path and checkpoint names.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cryptoflow.core import db, services
from cryptoflow.core.config import Settings, load_settings
from cryptoflow.core.jars import KAFKA_JARS, SPARK_JARS, ensure_jars
from cryptoflow.core.services import kafka, postgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data_dir(prefix: str = "cryptoflow-test-") -> Path:
    """A temp dir the 'postgres' user can traverse (PostgreSQL refuses to run as root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("CRYPTOFLOW_TEST_TMP")))
    path.chmod(0o755)
    return path


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for a test: fresh ports, nothing read from the developer's environment."""
    base = load_settings(environ={}, dotenv=None)
    values = dict(
        data_dir=data_dir,
        jar_cache=Path(os.environ.get("CRYPTOFLOW_JAR_CACHE", str(base.jar_cache))),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        postgres_port=free_port(),
        sim_port=free_port(),
        kafka_heap="384m",
    )
    values.update(overrides)
    return load_settings(environ={}, dotenv=None, **values)


def wait_until(
    check: Callable[[], object],
    timeout: float = 120,
    interval: float = 0.25,
    what: str = "condition",
) -> object:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings of the session's real services (started here, stopped at the end)."""
    data_dir = make_data_dir()
    s = make_settings(data_dir)
    ensure_jars(s.jar_cache, SPARK_JARS, s.maven_repo)
    ensure_jars(s.jar_cache, KAFKA_JARS, s.maven_repo)
    services.up(s, progress=lambda _: None)
    try:
        db.apply_migrations(postgres.admin_dsn(s))
        postgres.ensure_login_roles(s)
        kafka.ensure_topic(s)
        yield s
    finally:
        services.down(s, progress=lambda _: None)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def spark(settings: Settings):
    from cryptoflow.core.spark import get_spark

    session = get_spark(settings, "cryptoflow-tests")
    yield session
    session.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topics, tables and checkpoints of one test."""
    return uuid.uuid4().hex[:8]
