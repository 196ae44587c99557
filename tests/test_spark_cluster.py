"""Issue 21, item 2: the pipeline on a real standalone Spark cluster.

The cluster is ``cryptoflow.core.services.spark_cluster``: a master and two workers of one
core each from pyspark's own distribution, on loopback. Executors import the project's code
from the zip the driver ships (not from the checkout), and the end-to-end exactness test (the
simulator with faults, a SIGKILL of the driver) passes with its tasks on both workers. The
pure tests check the configuration: master URLs, the code zip, the executors' settings.
"""

from __future__ import annotations

import json
import random
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
from cryptoflow.core.services import spark_cluster
from cryptoflow.supervisor import child_env
from tests.conftest import free_port
from tests.pipeline_helpers import isolated
from tests.test_end_to_end import killed_pipeline_stays_exact

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
    s = settings.replace(
        spark_workers=2, spark_master_port=free_port(), spark_master_ui_port=free_port()
    )
    try:
        assert spark_cluster.start(s)
        yield s
    finally:
        spark_cluster.stop(s)
    assert not spark_cluster.running(s) and not spark_cluster.running_workers(s)


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


def _tasks_finished_per_worker(s: Settings, app_ids: set[str]) -> dict[int, int]:
    """Tasks that executors of the applications ``app_ids`` finished, per worker (their logs
    in the workers' work dirs)."""
    finished = {}
    for n in (1, 2):
        work = spark_cluster.worker_dir(s, n) / "work"
        logs = [p for app in app_ids for p in (work / app).glob("*/stderr")]
        finished[n] = sum(p.read_text(errors="replace").count("Finished task") for p in logs)
    return finished


@pytest.mark.integration
def test_driver_killed_on_the_cluster_stays_exact(cluster: Settings, spark, unique, tmp_path):
    """The exactness test of tests/test_end_to_end.py with the jobs on the cluster: the
    driver (``up``) SIGKILLed once and restarted; its tasks ran on both workers."""
    s = isolated(cluster, unique, tmp_path).replace(source="sim", sim_port=free_port())

    def ran_on_the_workers() -> None:
        status = spark_cluster.master_status(s)
        assert status is not None
        apps = [a for a in status["activeapps"] + status["completedapps"]
                if a["name"] == "cryptoflow-up"]  # fmt: skip
        active = [a for a in status["activeapps"] if a["name"] == "cryptoflow-up"]
        assert len(apps) >= 2 and len(active) == 1  # the killed driver's and the restarted
        assert active[0]["cores"] == 2  # one executor on each worker
        finished = _tasks_finished_per_worker(s, {a["id"] for a in apps})
        assert all(n > 0 for n in finished.values()), finished

    killed_pipeline_stays_exact(
        s, spark, tmp_path, kills=1, rng=random.Random(unique), per_symbol=300,
        while_running=ran_on_the_workers,
    )  # fmt: skip
