"""The one Spark session factory every job uses."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from py4j.protocol import Py4JError
from pyspark import SparkContext, java_gateway
from pyspark.sql import SparkSession

from cryptoflow.core.config import Settings
from cryptoflow.core.executors import (
    cluster_conf,
    code_zip,
    drop_code_zip_from_path,
    executor_python,
    is_local,
    is_loopback,
    master_address,
)
from cryptoflow.core.jars import spark_classpath
from cryptoflow.core.jvm import local_fs_conf, local_fs_jar
from cryptoflow.core.logs import log_dir, verbose
from cryptoflow.core.services import s3, spark_cluster
from cryptoflow.core.services.process import die_with_parent, java_binary

log = logging.getLogger(__name__)

#: The JVM's log4j configuration: spark.log under the data dir (see spark_conf).
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def spark_conf(s: Settings, app_name: str) -> dict[str, str]:
    """Every Spark setting the project relies on, in one place."""
    jars = ",".join(str(j) for j in spark_classpath(s.jar_cache, s3a=bool(s.s3a_roots)))
    conf = {
        "spark.app.name": app_name,
        "spark.master": s.spark_master_url,
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
    local = is_local(s.spark_master_url)
    nio_fs = local_fs_jar(s.jar_cache) if local else None
    if nio_fs is not None:  # no process per file; a cheap _delta_log listing (cryptoflow.core.jvm)
        conf.update(local_fs_conf(nio_fs, s.jar_cache))
    if not local:  # the project's code, Python and executor size (cryptoflow.core.executors)
        conf.update(cluster_conf(s, code_zip(s.data_dir.resolve() / "spark-code")))
    if s.s3a_roots:  # the lake or the checkpoints on object storage
        conf.update(s3a_conf(s))
    return conf


def s3a_conf(s: Settings) -> dict[str, str]:
    """Hadoop's S3A settings for the s3a:// roots (docs/object-storage.md). The keys are
    secrets: Spark redacts them (spark.redaction.regex), nothing here logs them."""
    access_key, secret_key = s3.credentials(s)
    endpoint = s.s3_url
    prefix = "spark.hadoop.fs.s3a."
    conf = {
        prefix + "impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        prefix + "endpoint": endpoint,
        prefix + "endpoint.region": s.s3_region,
        prefix + "path.style.access": str(s.s3_path_style_access).lower(),
        prefix + "connection.ssl.enabled": str(endpoint.startswith("https:")).lower(),
        # Delta's log store for s3a (its default, named here): it serialises commits within
        # this driver only; two drivers writing one table can lose commits (single writer).
        "spark.delta.logStore.s3a.impl": "io.delta.storage.S3SingleDriverLogStore",
    }
    if access_key:  # else Hadoop's default chain: AWS_* variables, profile, instance role
        conf[prefix + "aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        )
        conf[prefix + "access.key"] = access_key
        conf[prefix + "secret.key"] = secret_key
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


def get_spark(s: Settings, app_name: str = "cryptoflow") -> SparkSession:
    """A Spark session with Delta, the Kafka connector and the project's settings.

    A local JVM is started in a session of its own and dies with this process (see
    ``_OwnSessionPopen``): end it with ``stop_spark``."""
    java = java_binary()
    os.environ.setdefault("JAVA_HOME", os.path.dirname(os.path.dirname(os.path.realpath(java))))
    master = s.spark_master_url
    address = master_address(master)
    if is_local(master) or (address is not None and is_loopback(address[0])):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if s.spark_workers:  # the local cluster, which `up` may be starting meanwhile
        spark_cluster.wait_ready(s)
    # Python workers (``createDataFrame`` of local rows) otherwise start ``python3`` from
    # PATH, often not the project's interpreter; another minor version fails every task.
    # pyspark tells executors to run this variable's interpreter (``executor_python``).
    if s.spark_python_archive and not is_local(master):
        os.environ["PYSPARK_PYTHON"] = executor_python(s)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in spark_conf(s, app_name).items():
        builder = builder.config(key, value)
    with _jvm_in_own_session(), _jvm_output_to(None if verbose() else log_dir(s) / "spark.log"):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if not is_local(master):
        drop_code_zip_from_path()  # the zip is the executors'
    log.info("spark session master=%s version=%s", master, spark.version)
    return spark


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
