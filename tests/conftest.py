"""Shared fixtures: real services in a throwaway data dir on free ports, and one Spark session.

The whole test session shares one embedded Kafka broker, one PostgreSQL cluster and one
local Spark session; tests isolate themselves by topic, table path and checkpoint names.

Every test that uses those (the ``settings`` or ``spark`` fixture, directly or through another
fixture) is marked ``integration`` here, so ``pytest -m "not integration"`` runs the pure tests
only, without starting Kafka, PostgreSQL or a JVM. A test that starts services or Spark by
itself (a ``cryptoflow up`` subprocess, say) carries ``pytest.mark.integration`` explicitly; a
pure run fails any test that leaves such a process of its own behind (``_no_services_guard``).
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

# Fixtures that start the session's Kafka broker and PostgreSQL cluster (``settings``) or its
# Spark JVM (``spark``); fixtures built on them inherit them through ``item.fixturenames``.
SERVICE_FIXTURES = frozenset({"settings", "spark"})

# Set in this process's environment, so every process the session starts inherits it: the
# pure-run guard tells this session's JVMs and PostgreSQL from anyone else's by it.
SESSION_TOKEN_VAR = "PYTEST_CRYPTOFLOW_SESSION"  # not CRYPTOFLOW_*: no setting
os.environ[SESSION_TOKEN_VAR] = uuid.uuid4().hex
# Process names that mean a service or Spark was started: Kafka and Spark are JVMs.
SERVICE_PROCESSES = frozenset({"java", "postgres", "postmaster"})


_PURE_RUN = pytest.StashKey[bool]()
_REPORTED = pytest.StashKey[set[str]]()


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_PURE_RUN] = not any(
        item.get_closest_marker("integration") for item in session.items
    )
    session.config.stash[_REPORTED] = set()


def session_service_processes() -> set[str]:
    """``pid name`` of the running JVMs and PostgreSQL servers this test session started."""
    token = f"{SESSION_TOKEN_VAR}={os.environ[SESSION_TOKEN_VAR]}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            if name in SERVICE_PROCESSES and token in (entry / "environ").read_bytes().split(b"\0"):
                found.add(f"{entry.name} {name}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.fixture(autouse=True)
def _no_services_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """In a run without integration tests, fail the test after which a JVM or PostgreSQL of
    this session is running: it starts services or Spark, so it must be marked integration."""
    yield
    if not request.config.stash.get(_PURE_RUN, False) or not Path("/proc").is_dir():
        return
    reported = request.config.stash[_REPORTED]
    new = session_service_processes() - reported
    if new:
        reported |= new
        pytest.fail(
            f"a test outside the integration mark started {', '.join(sorted(new))}: mark it "
            "pytest.mark.integration (or use the settings/spark fixtures)",
            pytrace=False,
        )


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` different free ports: all bound at once, so the kernel cannot hand one out twice."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def make_data_dir(prefix: str = "cryptoflow-test-") -> Path:
    """A temp dir the 'postgres' user can traverse (PostgreSQL refuses to run as root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("CRYPTOFLOW_TEST_TMP")))
    path.chmod(0o755)
    return path


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for a test: fresh ports, nothing read from the developer's environment."""
    base = load_settings(environ={}, dotenv=None)
    kafka_port, controller_port, postgres_port, sim_port = free_ports(4)
    values = dict(
        data_dir=data_dir,
        jar_cache=Path(os.environ.get("CRYPTOFLOW_JAR_CACHE", str(base.jar_cache))),
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        postgres_port=postgres_port,
        sim_port=sim_port,
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
