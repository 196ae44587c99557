"""The lake and the checkpoints on S3 (``s3a://``): the embedded SeaweedFS's command line,
Spark's S3A settings, s3a:// URIs and the ops commands' file operations.

The pipeline on s3a:// (killed, resumed from its S3 checkpoint, exact in PostgreSQL, silver
and bronze; the Delta log in SeaweedFS; ``checkpoints``, ``history`` and time travel on the
s3a tables) is tested end to end in tests/test_scale_out.py, on a Spark cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark import SparkContext

from cryptoflow.core.config import ConfigError, Settings, is_s3a, load_settings, s3a_bucket
from cryptoflow.core.errors import CryptoflowError
from cryptoflow.core.services import s3
from pipelines.ops.checkpoints import read_checkpoint
from pipelines.ops.files import Files, join, local_path


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
