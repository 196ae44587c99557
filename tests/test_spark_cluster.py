"""Issue 21, item 2: the pipeline on a real standalone Spark cluster.

The cluster is ``cryptoflow.core.services.spark_cluster``: a master and two workers of one
core each from pyspark's own distribution, on loopback. Executors import the project's code
from the zip the driver ships (not from the checkout). The pure tests check the configuration:
master URLs, the code zip, the executors' settings. The end-to-end exactness test on the
cluster (the simulator with faults, a SIGKILL of the driver, its tasks on both workers) is
part of tests/test_scale_out.py, with the lake on S3 and a Kafka broker killed as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cryptoflow.core.config import Settings, load_settings
from cryptoflow.core.errors import ConfigError
from cryptoflow.core.executors import (
    PACKAGES,
    ROOT,
    cluster_conf,
    code_files,
    code_zip,
    drop_code_zip_from_path,
    is_local,
    master_address,
)
from cryptoflow.supervisor import child_env
from tests.service_stacks import services_running, with_spark_cluster

# ---------------------------------------------------------------- pure: the configuration


def test_master_urls():
    assert master_address("spark://127.0.0.1:7077") == ("127.0.0.1", 7077)
    assert master_address("spark://m1:7077,m2:7078") == ("m1", 7077)  # standby masters
    assert master_address("local[2]") is None
    assert master_address("k8s://https://10.0.0.1:6443") is None
    for bad in ("spark://", "spark://host", "spark://host:port"):
        with pytest.raises(ConfigError, match="spark://HOST:PORT"):
            master_address(bad)
    assert is_local("local") and is_local("local[*]") and is_local("local[2]")
    assert not is_local("spark://127.0.0.1:7077") and not is_local("localhost")


def test_local_cluster_settings():
    s = load_settings(environ={"CRYPTOFLOW_SPARK_WORKERS": "2"}, dotenv=None)
    assert s.spark_master_url == "spark://127.0.0.1:17077"
    assert load_settings(environ={}, dotenv=None).spark_master_url == "local[2]"
    other = {"CRYPTOFLOW_SPARK_MASTER": "spark://10.0.0.5:7077"}
    assert load_settings(environ=other, dotenv=None).spark_master_url == "spark://10.0.0.5:7077"
    with pytest.raises(ConfigError, match="set one"):
        load_settings(environ={**other, "CRYPTOFLOW_SPARK_WORKERS": "1"}, dotenv=None)


def test_code_zip_holds_the_packages_and_is_rebuilt_only_on_change(tmp_path):
    built = code_zip(tmp_path)
    names = zipfile.ZipFile(built).namelist()
    assert {n.split("/")[0] for n in names} == set(PACKAGES)
    assert "pipelines/batch.py" in names and "cryptoflow/core/executors.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert len(names) == len(code_files())
    mtime = built.stat().st_mtime_ns
    assert code_zip(tmp_path) == built and built.stat().st_mtime_ns == mtime  # not rebuilt

    copy = tmp_path / "checkout"  # a checkout whose code differs by one byte
    for package in PACKAGES:
        (copy / package).mkdir(parents=True)
        (copy / package / "__init__.py").write_text((ROOT / package / "__init__.py").read_text())
    first = code_zip(tmp_path / "zips", root=copy)
    (copy / "pipelines" / "__init__.py").write_text("# changed\n")
    second = code_zip(tmp_path / "zips", root=copy)
    assert first != second and first.exists() and second.exists()
    assert zipfile.ZipFile(second).read("pipelines/__init__.py") == b"# changed\n"


def test_cluster_conf(tmp_path):
    s = load_settings(environ={"CRYPTOFLOW_SPARK_WORKERS": "2"}, dotenv=None)
    conf = cluster_conf(s, tmp_path / "code.zip")
    assert conf["spark.submit.pyFiles"] == str(tmp_path / "code.zip")
    assert conf["spark.executor.memory"] == "512m" and conf["spark.executor.cores"] == "1"
    assert conf["spark.pyspark.python"] == sys.executable  # workers on this machine
    assert conf["spark.driver.host"] == "127.0.0.1"  # the master is on loopback
    assert "spark.archives" not in conf

    archive = tmp_path / "env.tar.gz"
    remote = load_settings(
        environ={"CRYPTOFLOW_SPARK_MASTER": "spark://spark-master:7077",
                 "CRYPTOFLOW_SPARK_PYTHON_ARCHIVE": str(archive)},
        dotenv=None,
    )  # fmt: skip
    conf = cluster_conf(remote, tmp_path / "code.zip")
    assert conf["spark.archives"] == f"{archive}#pyenv"
    assert conf["spark.pyspark.python"] == "./pyenv/bin/python"
    assert conf["spark.pyspark.driver.python"] == sys.executable
    assert "spark.driver.host" not in conf  # a remote master reaches the driver's own address


# ---------------------------------------------------------------- integration: a real cluster


@pytest.fixture(scope="module")
def cluster(settings: Settings):
    """The session's services plus a local standalone cluster: a master and two workers of
    one core each, on free ports; stopped (with their executors) at the end of the module."""
    s = with_spark_cluster(settings)
    with services_running(s) as started:
        assert started == ["spark"]
        yield s


@pytest.mark.integration
def test_executors_import_the_shipped_code(cluster: Settings):
    """A Python function runs in both workers' executors, with the project's modules
    imported from the code zip the driver shipped, in this interpreter."""
    probe = subprocess.run(
        [sys.executable, "-m", "tests.cluster_probe"], env=child_env(cluster),
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stdout[-2000:] + probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["master"] == cluster.spark_master_url
    assert seen["executors"] == 2
    workers = {t["cwd"].split("/spark-cluster/")[1].split("/")[0] for t in seen["tasks"]}
    assert workers == {"worker-1", "worker-2"}
    for task in seen["tasks"]:
        assert "/cryptoflow-code-" in task["module"] and ".zip/" in task["module"], task
        assert task["python"] == sys.executable
    # the driver imports the project as installed, not from the zip
    assert seen["driver_module"] == str(ROOT / "pipelines" / "batch.py")


def test_the_driver_does_not_import_from_the_zip(monkeypatch, tmp_path):
    code = str(tmp_path / "userFiles-1" / "cryptoflow-code-0123456789abcdef.zip")
    monkeypatch.setattr(sys, "path", ["/venv/site-packages", code, "/work"])
    drop_code_zip_from_path()
    assert sys.path == ["/venv/site-packages", "/work"]
