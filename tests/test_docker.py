"""The Docker path: the compose file validates, and `cryptoflow setup` against external
services creates the pipeline's and Grafana's logins in the right group roles."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import psycopg2
import pytest
from psycopg2.extensions import parse_dsn

from cryptoflow.core.config import read_dotenv
from cryptoflow.core.db import connect
from cryptoflow.core.services import postgres

ROOT = Path(__file__).resolve().parent.parent


def _dsn_for(admin: str, user: str, password: str) -> str:
    p = parse_dsn(admin)
    return f"postgresql://{user}:{password}@{p['host']}:{p['port']}/{p['dbname']}"


@pytest.mark.integration
def test_setup_creates_external_logins_with_least_privilege(settings, unique):
    admin = postgres.admin_dsn(settings)
    external = settings.replace(
        postgres_admin_dsn=admin,
        postgres_dsn=_dsn_for(admin, f"app_{unique}", "app-pw"),
        postgres_reader_dsn=_dsn_for(admin, f"grafana_{unique}", "grafana-pw"),
    )
    assert not external.embedded_postgres
    ensured = postgres.ensure_external_logins(external)
    assert ensured == [
        f"app_{unique} in cryptoflow_writer",
        f"grafana_{unique} in cryptoflow_reader",
    ]
    # Idempotent: a second run re-passwords instead of failing.
    assert postgres.ensure_external_logins(external) == ensured
    assert postgres.reader_dsn(external) == external.postgres_reader_dsn

    with connect(postgres.reader_dsn(external)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM metrics")
        assert cur.fetchone()[0] >= 0
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("INSERT INTO metrics (symbol) VALUES ('X')")
    conn.close()
    with connect(external.postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT has_table_privilege('raw_trades', 'INSERT')")
        assert cur.fetchone()[0] is True
        cur.execute("SELECT has_table_privilege('raw_trades', 'DELETE')")
        assert cur.fetchone()[0] is False
    conn.close()


@pytest.mark.integration
def test_external_login_without_password_is_a_clear_error(settings, unique):
    from cryptoflow.core.errors import ServiceError

    admin = postgres.admin_dsn(settings)
    p = parse_dsn(admin)
    external = settings.replace(
        postgres_admin_dsn=admin,
        postgres_dsn=admin,
        postgres_reader_dsn=f"postgresql://nopw_{unique}@{p['host']}:{p['port']}/{p['dbname']}",
    )
    with pytest.raises(ServiceError, match=r"names user 'nopw_\w+' without a password"):
        postgres.ensure_external_logins(external)


COMPOSE = ROOT / "docker" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"


def compose_config() -> dict:
    """The resolved compose model from a compose client that needs no engine: the
    ``docker compose`` plugin when present, else Debian's ``docker-compose``."""
    args = ["-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config"]
    plugin = shutil.which("docker")
    if (
        plugin
        and subprocess.run([plugin, "compose", "version"], capture_output=True).returncode == 0
    ):
        proc = subprocess.run([plugin, "compose", *args, "--format", "json"], capture_output=True,
                              text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    legacy = shutil.which("docker-compose")
    assert legacy, "no compose client: apt-get install docker-compose (see .ci/apt-packages.txt)"
    proc = subprocess.run([legacy, *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "is not set" not in proc.stderr, proc.stderr
    # docker-compose is Python with PyYAML; its own interpreter turns the YAML into JSON.
    interpreter = Path(legacy).read_text().splitlines()[0].removeprefix("#!").split()
    to_json = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    conv = subprocess.run([*interpreter, "-c", to_json], input=proc.stdout, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return json.loads(conv.stdout)


def test_compose_file_validates_and_follows_the_rules():
    model = compose_config()
    services = model["services"]
    assert set(services) == {"kafka", "postgres", "kafka-ui", "app", "dashboard", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["postgres"]["image"].split(":")[0] == "postgres"
    assert services["app"]["build"]["dockerfile"] == "docker/Dockerfile"
    for name, svc in services.items():
        assert "healthcheck" in svc, f"{name} has no health check"
        for dep, cond in svc.get("depends_on", {}).items():
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}: {cond}"
        for port in svc.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip')}:{port['published']}"
            assert text.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
        command = " ".join(map(str, svc.get("command") or []))
        assert "sleep" not in command, f"{name} waits with sleep"
    # Named volumes for Kafka, Postgres, the lake and the checkpoints.
    assert {"kafka-data", "postgres-data", "lake", "checkpoints"} <= set(model["volumes"])
    mounts = {svc: [str(v) for v in s.get("volumes", [])] for svc, s in services.items()}
    assert any("/data/lake" in m for m in mounts["app"])
    assert any("/data/checkpoints" in m for m in mounts["app"])
    env = services["app"]["environment"]
    assert env["CRYPTOFLOW_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["CRYPTOFLOW_POSTGRES_DSN"].startswith("postgresql://cryptoflow_app:")
    assert "@postgres:5432/" in env["CRYPTOFLOW_POSTGRES_READER_DSN"]
    # The live page holds the read-only login and nothing else.
    assert set(services["dashboard"]["environment"]) == {"CRYPTOFLOW_POSTGRES_READER_DSN"}
    # Every credential comes from the env file, none is written into the compose file.
    assert "change-me" not in COMPOSE.read_text()
    assert "change-me" in json.dumps(env)


def test_env_example_names_every_variable_the_compose_file_needs():
    needed = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    example = read_dotenv(ENV_EXAMPLE)
    assert needed <= set(example), needed - set(example)
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_dockerfile_installs_like_setup_does():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "uv sync --frozen" in dockerfile
    assert "cryptoflow setup --jars-only" in dockerfile
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert "cryptoflow setup\n" in entrypoint and 'exec cryptoflow "$@"' in entrypoint


def test_setup_jars_only_stops_after_the_jarsetup_steps():
    from cryptoflow.provision import setup_steps
    from tests.conftest import make_settings

    settings = make_settings(Path("/nonexistent-data-dir"))
    external = settings.replace(kafka_bootstrap_servers="kafka:9092")
    assert [name for name, _ in setup_steps(external, jars_only=True)] == [
        "java", "python dependencies", "spark jars", "hadoop local file system", "docs assets",
    ]  # fmt: skip
    assert [name for name, _ in setup_steps(settings, jars_only=True)][-2:] == [
        "kafka jars", "docs assets",
    ]  # fmt: skip
