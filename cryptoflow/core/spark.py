"""The one Spark session factory every job uses."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from py4j.clientserver import ClientServer, JavaParameters, PythonParameters
from py4j.java_gateway import java_import
from py4j.protocol import Py4JError
from pyspark import SparkContext, java_gateway
from pyspark.errors import PySparkRuntimeError
from pyspark.find_spark_home import _find_spark_home
from pyspark.serializers import UTF8Deserializer, read_int
from pyspark.sql import SparkSession

from cryptoflow.core.config import Settings
from cryptoflow.core.jars import spark_classpath
from cryptoflow.core.jvm import local_fs_conf, local_fs_jar
from cryptoflow.core.logs import log_dir, verbose
from cryptoflow.core.services.process import die_with_parent, java_binary

log = logging.getLogger(__name__)

#: The JVM's log4j configuration: spark.log under the data dir (see spark_conf).
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def spark_conf(s: Settings, app_name: str) -> dict[str, str]:
    """Every Spark setting the project relies on, in one place."""
    jars = ",".join(str(j) for j in spark_classpath(s.jar_cache))
    conf = {
        "spark.app.name": app_name,
        "spark.master": s.spark_master,
        "spark.jars": jars,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Binance fields differ only by case (e/E, t/T, m/M).
        "spark.sql.caseSensitive": "true",
        "spark.sql.shuffle.partitions": str(s.spark_shuffle_partitions),
        "spark.default.parallelism": str(s.spark_shuffle_partitions),
        "spark.driver.memory": s.spark_driver_memory,
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "false",
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.databricks.delta.autoCompact.enabled": "false",
        # Compiled query code is cached by its source. The streaming jobs of the former
        # three-query design plus Delta's own queries used more than the default 100
        # classes, so each batch evicted and recompiled code the next one needed (half of
        # all compilations at the live rate).
        "spark.sql.codegen.cache.maxEntries": "1000",
        "spark.sql.warehouse.dir": str((s.data_dir / "spark-warehouse").resolve()),
        # The parallel collector: on two shared cores G1's concurrent marking and write
        # barriers cost more CPU than its shorter pauses save (docs/pipelines.md,
        # "Performance": raw_trades p50 2.3-2.5 -> 2.0-2.1 s, drain 119 -> 103-107 s).
        "spark.driver.extraJavaOptions": (
            f"-Dderby.system.home={(s.data_dir / 'derby').resolve()} -XX:+UseParallelGC -Xss4m"
            # log4j: the JVM's messages go to <data_dir>/logs/spark.log, not to the terminal
            # (cryptoflow/core/log4j2.properties; `cryptoflow -v` adds the terminal).
            f" -Dlog4j2.configurationFile={LOG4J_CONFIG} -Dcryptoflow.log.dir={log_dir(s)}"
            f" -Dcryptoflow.spark.console={'warn' if verbose() else 'off'}"
        ),
    }
    if urlparse(s.checkpoints).scheme in ("", "file"):
        # Without Hadoop's native library the default (FileContext) manager's rename forks
        # `readlink` and `chmod` for every offset and commit file: ~55 ms of each
        # micro-batch. A local rename is atomic, which is all this manager needs.
        conf["spark.sql.streaming.checkpointFileManagerClass"] = (
            "org.apache.spark.sql.execution.streaming.checkpointing."
            "FileSystemBasedCheckpointFileManager"
        )
    nio_fs = local_fs_jar(s.jar_cache) if s.spark_master.startswith("local") else None
    if nio_fs is not None:  # no process per file; a cheap _delta_log listing (cryptoflow.core.jvm)
        conf.update(local_fs_conf(nio_fs, s.jar_cache))
    return conf


class _OwnSessionPopen(subprocess.Popen):
    """pyspark's ``Popen`` of the Spark JVM (``java_gateway.launch_gateway``), in a session of
    its own and, started from the main thread, SIGKILLed when this process dies.

    Its own session: a signal to the command's process group (``kill -TERM -PGID``,
    ``timeout``, ``docker stop``, a terminal's Ctrl-C or hang-up) reaches only the Python
    side, which stops the queries between batches and then the JVM. In the group, the JVM's
    own shutdown hook stopped the SparkContext under the running batches. SIGKILL when this
    process dies: the JVM never outlives it (its stdin-EOF watch runs the same shutdown
    hooks, which can hang with the Python side gone). The pipeline is safe against a kill at
    any point of a batch (docs/pipelines.md)."""

    def __init__(self, args: Any, **kwargs: Any) -> None:
        pyspark_preexec = kwargs.pop("preexec_fn", None)  # ignores SIGINT
        die = die_with_parent(signal.SIGKILL)
        main = threading.current_thread() is threading.main_thread()

        def preexec() -> None:
            if pyspark_preexec is not None:
                pyspark_preexec()
            if main:  # Linux signals when the forking *thread* ends
                die()

        super().__init__(args, start_new_session=True, preexec_fn=preexec, **kwargs)


@contextlib.contextmanager
def _jvm_in_own_session() -> Iterator[None]:
    """pyspark's ``launch_gateway`` starts the JVM with ``_OwnSessionPopen`` meanwhile."""
    namespace = vars(java_gateway)
    saved = namespace["Popen"]
    namespace["Popen"] = _OwnSessionPopen
    try:
        yield
    finally:
        namespace["Popen"] = saved


@contextlib.contextmanager
def _jvm_output_to(path: Path | None) -> Iterator[None]:
    """pyspark's ``launch_gateway`` starts the JVM with its stdout and stderr appended to
    ``path`` meanwhile (None: inherited). What the JVM prints itself, outside log4j (``WARNING:
    Using incubator modules``, a crash report), then never lands on the terminal, where it
    would also tear the live status view of ``up``."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    namespace = vars(java_gateway)
    saved = namespace["Popen"]
    with open(path, "ab") as out:
        namespace["Popen"] = functools.partial(saved, stdout=out, stderr=out)
        try:
            yield
        finally:
            namespace["Popen"] = saved


#: What pyspark's ``launch_gateway`` imports into a new gateway's JVM view (pyspark 4.1).
_JAVA_IMPORTS = (
    "org.apache.spark.SparkConf", "org.apache.spark.api.java.*",
    "org.apache.spark.api.python.*", "org.apache.spark.ml.python.*",
    "org.apache.spark.mllib.api.python.*", "org.apache.spark.resource.*",
    "org.apache.spark.sql.Encoders", "org.apache.spark.sql.OnSuccessCall",
    "org.apache.spark.sql.functions", "org.apache.spark.sql.classic.*",
    "org.apache.spark.sql.api.python.*", "org.apache.spark.sql.hive.*", "scala.Tuple2",
)  # fmt: skip


@dataclass
class _BootingJvm:
    """A Spark JVM launched by ``_launch_jvm`` that has not said where its gateway is yet."""

    proc: subprocess.Popen
    info_dir: str
    info_file: str


def _launch_jvm(conf: dict[str, str]) -> _BootingJvm:
    """The first half of pyspark's ``java_gateway.launch_gateway``: ``spark-submit`` with
    ``conf``, started through ``java_gateway.Popen`` (so ``_jvm_in_own_session`` and
    ``_jvm_output_to`` apply); ``_connect`` is the second half."""
    command = [os.path.join(_find_spark_home(), "./bin/spark-submit")]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    submit_args = os.environ.get("PYSPARK_SUBMIT_ARGS", "pyspark-shell")
    if os.environ.get("SPARK_TESTING"):
        submit_args = f"--conf spark.ui.enabled=false {submit_args}"
    command += shlex.split(submit_args)
    info_dir = tempfile.mkdtemp()
    info_file = os.path.join(info_dir, "gateway")
    env = {**os.environ, "SPARK_CONNECT_MODE": "0", "_PYSPARK_DRIVER_CONN_INFO_PATH": info_file}

    def ignore_sigint() -> None:  # as pyspark's: Ctrl-C is the Python side's to handle
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    try:
        popen = vars(java_gateway)["Popen"]
        proc = popen(command, stdin=subprocess.PIPE, env=env, preexec_fn=ignore_sigint)
    except BaseException:
        shutil.rmtree(info_dir, ignore_errors=True)
        raise
    return _BootingJvm(proc, info_dir, info_file)


def _connect(jvm: _BootingJvm) -> ClientServer:
    """The second half of ``launch_gateway``: wait for the JVM's gateway, connect to it."""
    try:
        while jvm.proc.poll() is None and not os.path.isfile(jvm.info_file):
            time.sleep(0.05)
        if not os.path.isfile(jvm.info_file):
            raise PySparkRuntimeError(errorClass="JAVA_GATEWAY_EXITED", messageParameters={})
        with open(jvm.info_file, "rb") as info:
            port = read_int(info)
            secret = UTF8Deserializer().loads(info)
    finally:
        shutil.rmtree(jvm.info_dir, ignore_errors=True)
    gateway = ClientServer(
        java_parameters=JavaParameters(port=port, auth_token=secret, auto_convert=True),
        python_parameters=PythonParameters(port=0, eager_load=False),
    )
    gateway.proc = jvm.proc  # as launch_gateway does: for stop_spark
    for name in _JAVA_IMPORTS:
        java_import(gateway.jvm, name)
    return gateway


class SparkStart:
    """A Spark session on its way. The constructor launches the JVM and returns at once; it
    boots in a process of its own (many seconds on a small machine) while the caller does
    other work (``up`` imports the pipeline, Great Expectations alone taking seconds, and
    waits for its services); ``session()`` then connects to it and makes the session.

    The JVM runs in a session of its own and dies with this process (``_OwnSessionPopen``):
    end it with ``stop_spark`` (or ``abandon`` before ``session``). Start it from the main
    thread."""

    def __init__(self, s: Settings, app_name: str = "cryptoflow") -> None:
        java = java_binary()
        os.environ.setdefault("JAVA_HOME", os.path.dirname(os.path.dirname(os.path.realpath(java))))
        if s.spark_master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # Python workers (``createDataFrame`` of local rows) otherwise start ``python3`` from
        # PATH, often not the project's interpreter; another minor version fails every task.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        self.conf = spark_conf(s, app_name)
        self.output = None if verbose() else log_dir(s) / "spark.log"
        self.settings = s
        self._jvm: _BootingJvm | None = None
        own_launch = (
            SparkContext._gateway is None  # else this process has its JVM already
            and "PYSPARK_GATEWAY_PORT" not in os.environ  # else a JVM that launched Python
            and os.environ.get("PYSPARK_PIN_THREAD", "true").lower() == "true"
        )
        if own_launch:
            with _jvm_in_own_session(), _jvm_output_to(self.output):
                self._jvm = _launch_jvm(self.conf)

    def session(self) -> SparkSession:
        """Connect to the JVM (waiting for it to boot) and return the session."""
        if self._jvm is not None:
            jvm, self._jvm = self._jvm, None
            try:
                gateway = _connect(jvm)
            except BaseException:
                _kill(jvm.proc)
                raise
            SparkContext._ensure_initialized(gateway=gateway)
        builder = SparkSession.builder
        for key, value in self.conf.items():
            builder = builder.config(key, value)
        with _jvm_in_own_session(), _jvm_output_to(self.output):  # when none was launched
            spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("WARN")
        log.info("spark session master=%s version=%s", self.settings.spark_master, spark.version)
        return spark

    def abandon(self) -> None:
        """End a JVM launched for a session that is no longer wanted (``session`` not called)."""
        if self._jvm is not None:
            jvm, self._jvm = self._jvm, None
            _kill(jvm.proc)
            shutil.rmtree(jvm.info_dir, ignore_errors=True)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


def get_spark(s: Settings, app_name: str = "cryptoflow") -> SparkSession:
    """A Spark session with Delta, the Kafka connector and the project's settings.

    A local JVM is started in a session of its own and dies with this process (see
    ``_OwnSessionPopen``): end it with ``stop_spark``. ``SparkStart`` starts it in the
    background."""
    return SparkStart(s, app_name).session()


def stop_spark(spark: SparkSession, timeout_s: float = 30.0) -> None:
    """Stop the session and end its JVM (it exits when its stdin closes; killed after
    ``timeout_s``), so no process of it outlives the call. Stop the queries first."""
    try:
        spark.stop()
    except Py4JError as e:  # the JVM is gone already: nothing left to stop in it
        log.warning("stopping spark: %s", str(e).splitlines()[0][:200])
    gateway = SparkContext._gateway
    proc: subprocess.Popen | None = getattr(gateway, "proc", None)
    if gateway is None or proc is None:  # not launched by this process
        return
    with contextlib.suppress(Exception):
        gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("the spark JVM pid=%d did not exit in %.0fs: killed", proc.pid, timeout_s)
        proc.kill()
        proc.wait(10)
