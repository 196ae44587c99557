"""The local standalone Spark cluster: a master and ``spark_workers`` workers from pyspark's own
distribution (``bin/spark-class``), on loopback, for ``CRYPTOFLOW_SPARK_WORKERS``.

Each worker offers one executor's cores and memory (``spark_executor_cores``,
``spark_executor_memory``), so an application gets one executor per worker. The master
listens on ``spark_master_port`` and serves its web UI and ``/json/`` status on
``spark_master_ui_port``; the workers take free ports. Pid files and the workers' work and
scratch dirs live under ``<data_dir>/spark-cluster``, the logs in ``<data_dir>/logs``
(``spark-master.log``, ``spark-worker-N.log``; an executor's own log is in its worker's
``work/<app>/<executor>/stderr``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ServiceError
from cryptoflow.core.logs import log_dir
from cryptoflow.core.services.process import (
    ensure_port_free,
    java_binary,
    pid_alive,
    port_open,
    read_pid,
    stop_pid,
    wait_for,
)

log = logging.getLogger(__name__)
HOST = "127.0.0.1"
#: Heap of the master's and of each worker's JVM (they only schedule; executors are apart).
DAEMON_HEAP = "256m"
MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"


def root(s: Settings) -> Path:
    return s.data_dir.resolve() / "spark-cluster"


def master_pid_file(s: Settings) -> Path:
    return root(s) / "master.pid"


def worker_pid_file(s: Settings, n: int) -> Path:
    return root(s) / f"worker-{n}.pid"


def worker_dir(s: Settings, n: int) -> Path:
    """Worker ``n``'s directory: ``work`` (applications' executors) and ``local`` (scratch)."""
    return root(s) / f"worker-{n}"


def spark_home() -> Path:
    """The installed pyspark package, a complete Spark distribution (``bin/``, ``jars/``)."""
    import pyspark

    home = Path(pyspark.__file__).resolve().parent
    if not (home / "bin" / "spark-class").exists():
        raise ServiceError(f"pyspark at {home} has no bin/spark-class: reinstall pyspark")
    return home


def ui_url(s: Settings) -> str:
    return f"http://{HOST}:{s.spark_master_ui_port}"


def _env(extra: dict[str, str]) -> dict[str, str]:
    java = java_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_")}
    env.update(
        SPARK_HOME=str(spark_home()),
        JAVA_HOME=os.path.dirname(os.path.dirname(os.path.realpath(java))),
        SPARK_LOCAL_IP=HOST,  # RPC and web UIs on loopback
        SPARK_PUBLIC_DNS=HOST,  # the addresses the UIs and the master advertise
        SPARK_DAEMON_MEMORY=DAEMON_HEAP,
    )
    env.update(extra)
    return env


def _spawn(s: Settings, argv: list[str], env: dict[str, str], name: str, pid_file: Path) -> int:
    """``spark-class ARGV`` in a session of its own (``stop_pid`` ends its group: the JVM
    and a worker's executors), its output appended to ``<data_dir>/logs/<name>.log``."""
    logs = log_dir(s)
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            [str(spark_home() / "bin" / "spark-class"), *argv],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=root(s),
        )  # fmt: skip
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def running(s: Settings) -> bool:
    """The master runs (its workers may not all)."""
    return pid_alive(read_pid(master_pid_file(s)))


def running_workers(s: Settings) -> list[int]:
    """Numbers (1..spark_workers) of the workers whose process runs."""
    return [n for n in range(1, s.spark_workers + 1) if pid_alive(read_pid(worker_pid_file(s, n)))]


def master_status(s: Settings, timeout: float = 3.0) -> dict[str, Any] | None:
    """The master's ``/json/`` (workers, applications, cores), None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{ui_url(s)}/json/", timeout=timeout) as r:
            status: dict[str, Any] = json.load(r)
            return status
    except (OSError, ValueError):
        return None


def alive_workers(s: Settings) -> int:
    status = master_status(s)
    return int(status.get("aliveworkers", 0)) if status else 0


def start(s: Settings) -> bool:
    """Start the master unless it runs, and every worker that does not run; wait until all
    have registered. Returns True when this call started something."""
    root(s).mkdir(parents=True, exist_ok=True)
    started = False
    if not running(s):
        ensure_port_free(
            HOST, s.spark_master_port, "the Spark master", "CRYPTOFLOW_SPARK_MASTER_PORT"
        )
        ensure_port_free(HOST, s.spark_master_ui_port, "the Spark master's web UI",
                         "CRYPTOFLOW_SPARK_MASTER_UI_PORT")  # fmt: skip
        argv = [MASTER, "--host", HOST, "--port", str(s.spark_master_port),
                "--webui-port", str(s.spark_master_ui_port)]  # fmt: skip
        # no REST submission server (port 6066): applications connect as drivers
        env = _env({"SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"})
        pid = _spawn(s, argv, env, "spark-master", master_pid_file(s))
        started = True
        wait_for(
            lambda: _master_up(s, pid), 120, f"the Spark master on {HOST}:{s.spark_master_port}"
        )
        log.info("spark master started pid=%d port=%d ui=%d", pid, s.spark_master_port,
                 s.spark_master_ui_port)  # fmt: skip
    for n in range(1, s.spark_workers + 1):
        if pid_alive(read_pid(worker_pid_file(s, n))):
            continue
        work, scratch = worker_dir(s, n) / "work", worker_dir(s, n) / "local"
        work.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)
        argv = [WORKER, "--host", HOST, "--port", "0", "--webui-port", "0",
                "--cores", str(s.spark_executor_cores), "--memory", s.spark_executor_memory,
                "--work-dir", str(work), s.spark_master_url]  # fmt: skip
        pid = _spawn(s, argv, _env({"SPARK_LOCAL_DIRS": str(scratch)}), f"spark-worker-{n}",
                     worker_pid_file(s, n))  # fmt: skip
        started = True
        log.info("spark worker %d started pid=%d cores=%d memory=%s", n, pid,
                 s.spark_executor_cores, s.spark_executor_memory)  # fmt: skip
    wait_for(lambda: _workers_up(s), 120, f"{s.spark_workers} Spark workers registered", 0.5)
    return started


def _master_up(s: Settings, pid: int) -> bool:
    if not pid_alive(pid):
        raise ServiceError(
            f"the Spark master exited while starting; see {log_dir(s)}/spark-master.log"
        )
    status = master_status(s) if port_open(HOST, s.spark_master_port) else None
    return bool(status and status.get("status") == "ALIVE")


def _workers_up(s: Settings) -> bool:
    dead = [n for n in range(1, s.spark_workers + 1) if n not in running_workers(s)]
    if dead:
        raise ServiceError(
            f"Spark worker {dead[0]} exited while starting; "
            f"see {log_dir(s)}/spark-worker-{dead[0]}.log"
        )
    return alive_workers(s) >= s.spark_workers


def wait_ready(s: Settings, timeout: float = 180.0, appear_s: float = 20.0) -> None:
    """Wait until the local cluster's master answers with every worker registered; a
    ServiceError when it is not running ``appear_s`` after the call (``up`` starts it beside
    Spark: give that the time to write its pid file)."""
    deadline = time.monotonic() + appear_s
    while not running(s):
        if time.monotonic() > deadline:
            raise ServiceError(
                f"the local Spark cluster (CRYPTOFLOW_SPARK_WORKERS={s.spark_workers}) is not "
                "running: start it with `cryptoflow services up`"
            )
        time.sleep(0.2)
    wait_for(
        lambda: alive_workers(s) >= s.spark_workers,
        timeout,
        f"the local Spark cluster at {s.spark_master_url} with {s.spark_workers} workers",
        0.5,
    )


def stop(s: Settings) -> bool:
    """Stop the workers (and their executors), then the master. True when any ran."""
    pid_files = [worker_pid_file(s, n) for n in range(1, s.spark_workers + 1)]
    pid_files += sorted(set(root(s).glob("worker-*.pid")) - set(pid_files))  # a larger cluster's
    pid_files.append(master_pid_file(s))
    stopped = False
    for pid_file in pid_files:
        pid = read_pid(pid_file)
        if pid_alive(pid):
            assert pid is not None
            stop_pid(pid, timeout=30)
            stopped = True
        pid_file.unlink(missing_ok=True)
    return stopped


def health(s: Settings) -> tuple[bool, str]:
    """(healthy, detail) of the local cluster for ``services status``."""
    if not running(s):
        return False, "not running (cryptoflow services up)"
    status = master_status(s)
    if status is None:
        return False, f"master at {s.spark_master_url} does not answer on {ui_url(s)}"
    alive = int(status.get("aliveworkers", 0))
    detail = (
        f"{s.spark_master_url}: {alive} of {s.spark_workers} workers alive, "
        f"{status.get('coresused', 0)}/{status.get('cores', 0)} cores used, "
        f"{len(status.get('activeapps', []))} application(s); UI {ui_url(s)}"
    )
    return alive >= s.spark_workers, detail
