"""The lake and the checkpoints on S3 (``s3a://``): the embedded SeaweedFS, Spark's S3A
settings, and the pipeline restarted from its checkpoint on the object store.

The integration test runs the pipeline as ``cryptoflow run`` subprocesses (the session's Spark
JVM has no S3A classes: they join the classpath only when an s3a:// root is configured), and
reads the results back with the ops commands in one more process (``tests.cli_session``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark import SparkContext

from cryptoflow.core import services
from cryptoflow.core.config import ConfigError, Settings, is_s3a, load_settings, s3a_bucket
from cryptoflow.core.errors import CryptoflowError
from cryptoflow.core.jars import S3_JARS, ensure_jars
from cryptoflow.core.services import s3
from cryptoflow.core.tools import ensure_weed
from pipelines.ops.checkpoints import read_checkpoint
from pipelines.ops.files import Files, join, local_path
from tests import cli_session
from tests.conftest import free_port, wait_until
from tests.pipeline_helpers import env_for, expected, isolated, pg_rows, pg_trades, produce_trades
from tests.pipeline_helpers import trades as make_trades

BUCKET = "lake-tests"


def _settings(tmp_path: Path, **values) -> Settings:
    return load_settings(environ={}, dotenv=None, data_dir=tmp_path, **values)


# ----- pure: settings, URIs, Spark's S3A settings, local files


def test_s3a_uris_and_the_embedded_server_choice(tmp_path):
    assert is_s3a("s3a://b/lake") and not is_s3a("/data/lake") and not is_s3a("file:/x")
    assert s3a_bucket("s3a://my-bucket/a/b") == "my-bucket"
    local = _settings(tmp_path)
    assert not local.s3a_roots and not local.embedded_s3
    lake = _settings(tmp_path, lake_root="s3a://b1/lake", checkpoint_root="s3a://b2/ck")
    assert lake.embedded_s3 and lake.s3_url == f"http://127.0.0.1:{lake.s3_port}"
    assert s3.buckets(lake) == ["b1", "b2"]
    assert s3.buckets(lake.replace(checkpoint_root="s3a://b1/ck")) == ["b1"]
    external = lake.replace(s3_endpoint="https://s3.eu-west-1.amazonaws.com")
    assert not external.embedded_s3 and external.s3_url == "https://s3.eu-west-1.amazonaws.com"
    assert lake.table_path("silver") == "s3a://b1/lake/silver"
    assert lake.checkpoint_path("trades") == "s3a://b2/ck/trades"


def test_s3_roots_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="s3a://bucket/lake"):
        _settings(tmp_path, lake_root="s3://bucket/lake")
    with pytest.raises(ConfigError, match="expected s3a://<bucket>"):
        _settings(tmp_path, checkpoint_root="s3a:///checkpoints")


def test_s3_keys_are_masked_in_the_public_config(tmp_path):
    s = _settings(tmp_path, lake_root="s3a://b/lake", s3_access_key="AK", s3_secret_key="SK")
    public = s.as_public_dict()
    assert public["s3_access_key"] == public["s3_secret_key"] == "***"
    assert public["resolved"]["s3"] == {"embedded": True, "endpoint": s.s3_url}
    assert "SK" not in json.dumps(public, default=str)


def test_s3a_spark_conf(tmp_path):
    from cryptoflow.core.spark import s3a_conf

    s = _settings(tmp_path, lake_root="s3a://b/lake")
    conf = s3a_conf(s)  # the embedded server's keys, generated once into the data dir
    access, secret = s3.credentials(s)
    assert access and secret and s3.credentials(s) == (access, secret)
    assert (s3.paths(s).credentials.stat().st_mode & 0o777) == 0o600
    assert conf["spark.hadoop.fs.s3a.endpoint"] == s.s3_url
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.access.key"] == access
    assert conf["spark.hadoop.fs.s3a.secret.key"] == secret
    assert conf["spark.delta.logStore.s3a.impl"] == "io.delta.storage.S3SingleDriverLogStore"
    # An external endpoint without keys: Hadoop's default AWS credential chain.
    aws = s.replace(s3_endpoint="https://s3.us-east-2.amazonaws.com", s3_region="us-east-2")
    conf = s3a_conf(aws)
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "us-east-2"
    assert not any("key" in k or "credentials" in k for k in conf)


def test_seaweedfs_command_stays_on_loopback(tmp_path):
    s = _settings(tmp_path, lake_root="s3a://b/lake")
    ports = {name: 40000 + i for i, name in enumerate(s3.INTERNAL_PORTS)}
    cmd = s3._command(s, s3.paths(s), ports, Path("/bin/weed"))
    assert "-ip.bind=127.0.0.1" in cmd and "-master.telemetry=false" in cmd
    assert f"-s3.port={s.s3_port}" in cmd and "-s3.port.iceberg=0" in cmd
    assert all(f"={port}" in " ".join(cmd) for port in ports.values())
    identity = json.loads(s3._identities("AK", "SK"))["identities"][0]
    assert identity["credentials"] == [{"accessKey": "AK", "secretKey": "SK"}]


def test_local_files_and_uris(tmp_path, monkeypatch):
    assert local_path("s3a://b/x") is None
    assert local_path("file:/tmp/x") == Path("/tmp/x") and local_path("/tmp/x") == Path("/tmp/x")
    assert join("s3a://b/ck/", "trades", "metadata") == "s3a://b/ck/trades/metadata"
    files = Files()
    root = str(tmp_path / "ck")
    files.write_text(join(root, "trades", "metadata"), '{"id":"q1"}\n')
    files.write_text(join(root, "trades", "offsets", "0"), 'v1\n{}\n{"t":{"0":5}}\n')
    assert files.read_text(join(root, "trades", "metadata")) == '{"id":"q1"}\n'
    assert files.list_dirs(root) == ["trades"] and files.list_dirs(join(root, "none")) == []
    assert list(files.list_files(join(root, "trades", "offsets"))) == ["0"]
    info = read_checkpoint("trades", join(root, "trades"))
    assert info.exists and info.query_id == "q1" and info.last_batch == 0
    files.rename(join(root, "trades"), join(root, "trades.old"))
    assert files.list_dirs(root) == ["trades.old"]
    with pytest.raises(FileNotFoundError):
        files.read_text(join(root, "trades", "metadata"))
    # No Spark context (as in a pure run, whatever ran before in this process) and no
    # settings to start one: a clear error, not a JVM.
    monkeypatch.setattr(SparkContext, "_active_spark_context", None)
    with pytest.raises(CryptoflowError, match="needs a Spark session"):
        Files().exists("s3a://b/ck")


# ----- integration: SeaweedFS, the pipeline on s3a://, restart, time travel, ops


@pytest.fixture(scope="module")
def s3_lake(settings: Settings):
    """The session's Kafka and PostgreSQL plus an embedded SeaweedFS on a free port, started
    by the project's service code (data under the session's data dir)."""
    tool_cache = Path(os.environ.get("CRYPTOFLOW_TOOL_CACHE", str(settings.tool_cache)))
    s = settings.replace(
        lake_root=f"s3a://{BUCKET}/lake",
        checkpoint_root=f"s3a://{BUCKET}/checkpoints",
        s3_port=free_port(),
        tool_cache=tool_cache,
    )
    ensure_weed(s.tool_cache)  # cached after the first build on a machine
    ensure_jars(s.jar_cache, S3_JARS, s.maven_repo)
    started = time.monotonic()
    assert services.up(s, progress=lambda _: None) == ["s3"]
    print(f"seaweedfs started in {time.monotonic() - started:.1f}s")
    try:
        yield s
    finally:
        services.down(s, progress=lambda _: None, only=("s3",))
    assert not s3.running(s)


def _quarantined(s: Settings) -> int:
    return pg_rows(s, "SELECT count(*) FROM quarantine WHERE topic = %s", (s.kafka_topic,))[0][0]


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_pipeline_on_s3_restarts_exactly_once_from_its_s3_checkpoint(s3_lake, unique, tmp_path):
    prefix = f"s3a://{BUCKET}/{unique}"
    s = isolated(s3_lake, unique, tmp_path).replace(
        lake_root=f"{prefix}/lake",
        checkpoint_root=f"{prefix}/checkpoints",
        max_offsets_per_trigger=40,
        run_status_interval_s=2,
    )
    payloads = make_trades(120, s.symbols)
    produce_trades(s, payloads + payloads[:20])  # and 20 duplicates, quarantined
    want = expected(payloads)
    log = tmp_path / "run.log"
    cli = [sys.executable, "-m", "cryptoflow"]

    with open(log, "ab") as out:  # 1: killed mid-stream
        proc = subprocess.Popen(
            [*cli, "run"], env=env_for(s), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(
            lambda: proc.poll() is not None or len(pg_trades(s, s.symbols)) >= len(want) // 4,
            900, 1.0, "a quarter of the trades in postgres before the kill",
        )  # fmt: skip
        assert proc.poll() is None, log.read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    with open(log, "ab") as out:  # 2: resumes from the S3 checkpoint, drains, exits
        drained = subprocess.run(
            [*cli, "run", "--available-now"], env=env_for(s), stdout=out,
            stderr=subprocess.STDOUT, timeout=900,
        )  # fmt: skip
    assert drained.returncode == 0, log.read_text()[-3000:]
    assert pg_trades(s, s.symbols) == want
    assert _quarantined(s) == 20

    # The Delta log is SeaweedFS's: the server itself lists it.
    listing = s3.shell(s, f"fs.ls /buckets/{BUCKET}/{unique}/lake/silver/_delta_log\n")
    assert f"{0:020d}.json" in listing

    # The ops commands on the s3a tables and checkpoints, in one more JVM.
    count = "SELECT count(*) AS n, count(DISTINCT symbol, trade_id) AS k FROM silver"
    commands = {
        "checkpoints": "checkpoints --format json",
        "history": "history silver --limit 100 --format json",
        "silver": f"query '{count}' --format json",
        "bronze": "query 'SELECT count(*) AS n FROM bronze' --format json",
        "as_of": "query 'SELECT count(*) AS n FROM silver' --as-of 1 --format json",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.cli_session", *commands.values()], env=env_for(s),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    parsed = cli_session.parse(done.stdout)
    results = {name: _json_lines(parsed[command][1]) for name, command in commands.items()}

    live = {c["job"]: c for c in results["checkpoints"]}["trades"]
    assert live["exists"] == "yes" and live["path"] == f"{prefix}/checkpoints/trades"
    assert live["committed"] == live["last_batch"] and live["committed"] >= 3
    assert live["owner"] == f"kafka:{s.kafka_topic} -> {prefix}/lake/bronze"
    assert f"kafka {s.kafka_topic} " in live["position"]

    assert results["silver"] == [{"n": len(want), "k": len(want)}]  # nothing lost or twice
    assert results["bronze"] == [{"n": len(payloads) + 20}]

    # Time travel on the s3a table: version 1 holds exactly the rows written up to it.
    written = {e["version"]: e["rows"] or 0 for e in results["history"]}
    assert sum(written.values()) == len(want) and len([v for v in written.values() if v]) >= 2
    rows_then = sum(rows for version, rows in written.items() if version <= 1)
    assert results["as_of"] == [{"n": rows_then}] and 0 < rows_then < len(want)
