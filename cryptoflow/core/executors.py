"""What the executors of a Spark cluster need from the driver: the project's code and a Python.

Executors run the project's Python functions (``mapInArrow``, ``foreachPartition``, UDFs) in
Python workers of their own. They get the code as one zip in ``spark.submit.pyFiles``
(``PACKAGES``, built under the data dir and rebuilt only when a file of them changed), and
run either this interpreter's path, which must then exist with the same dependencies on
every worker (it does for workers on this machine), or the ``bin/python`` of a packed
environment (``spark_python_archive``, made with venv-pack) that ``spark.archives`` unpacks
beside each executor. The JARs reach them through ``spark.jars`` (``spark_conf``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ConfigError

log = logging.getLogger(__name__)

#: The project's packages that executors import (top-level directories of the repository).
PACKAGES = ("cryptoflow", "pipelines", "ingestion", "expectations")
#: The repository: the packages' parent directory.
ROOT = Path(__file__).resolve().parents[2]
#: Where ``spark.archives`` unpacks the packed environment in each executor's directory.
ARCHIVE_ALIAS = "pyenv"
#: The code zip's name before its content hash.
ZIP_PREFIX = "cryptoflow-code-"
#: A fixed time for every zip entry, so the same files make the same zip.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def is_local(master: str) -> bool:
    """True for ``local``, ``local[N]``, ``local[*]``: the driver's JVM runs the tasks."""
    return master == "local" or master.startswith("local[")


def master_address(master: str) -> tuple[str, int] | None:
    """(host, port) of a standalone master ``spark://host:port`` (the first of a list of
    masters), None for another kind of master; a ConfigError for a malformed one."""
    if not master.startswith("spark://"):
        return None
    first = master.removeprefix("spark://").split(",")[0]
    parsed = urlparse(f"spark://{first}")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        raise ConfigError(
            f"Spark master {master!r}: expected spark://HOST:PORT (e.g. spark://127.0.0.1:7077)"
        )
    return parsed.hostname, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def code_files(root: Path = ROOT) -> list[Path]:
    """The files of ``PACKAGES`` under ``root``, compiled bytecode left out, in a fixed order."""
    files = []
    for package in PACKAGES:
        for path in (root / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append(path)
    return sorted(files)


def code_zip(directory: Path, root: Path = ROOT) -> Path:
    """The zip of ``PACKAGES`` in ``directory``, named by a hash of their files' paths and
    bytes: built when no zip of this content exists yet, else the one there."""
    files = code_files(root)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    target = directory / f"{ZIP_PREFIX}{digest.hexdigest()[:16]}.zip"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(f".{os.getpid()}.part")
    with zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as z:
        for path in files:
            entry = zipfile.ZipInfo(path.relative_to(root).as_posix(), _ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            z.writestr(entry, path.read_bytes())
    staging.replace(target)  # atomic: a concurrent build writes the same bytes
    log.info("built %s files=%d bytes=%d", target, len(files), target.stat().st_size)
    return target


def drop_code_zip_from_path() -> None:
    """Take the code zip off this (the driver's) ``sys.path``, where pyspark puts every
    ``spark.submit.pyFiles`` entry: the driver imports the project as installed, like under
    ``local``. Else a module first imported later came from the zip, a snapshot of the code
    at the session's start, beside modules imported before from the checkout."""
    sys.path[:] = [p for p in sys.path if not Path(p).name.startswith(ZIP_PREFIX)]


def executor_python(s: Settings) -> str:
    """The interpreter executors run: the packed environment's, else this one's path."""
    return f"./{ARCHIVE_ALIAS}/bin/python" if s.spark_python_archive else sys.executable


def cluster_conf(s: Settings, code: Path) -> dict[str, str]:
    """Spark settings of a cluster master (not ``local``): the code zip, the executors'
    size and Python, and a loopback driver address for a master on loopback."""
    conf = {
        "spark.submit.pyFiles": str(code),
        "spark.executor.memory": s.spark_executor_memory,
        "spark.executor.cores": str(s.spark_executor_cores),
        "spark.pyspark.python": executor_python(s),
        # the driver's collector and stack (spark_conf), for the same plans and code
        "spark.executor.extraJavaOptions": "-XX:+UseParallelGC -Xss4m",
    }
    if s.spark_python_archive:
        archive = s.spark_python_archive
        if "://" not in archive:
            archive = str(Path(archive).expanduser().resolve())
        conf["spark.archives"] = f"{archive}#{ARCHIVE_ALIAS}"
        conf["spark.pyspark.driver.python"] = sys.executable
    address = master_address(s.spark_master_url)
    if address is not None and is_loopback(address[0]):
        # executors on this machine reach the driver on loopback, not on a public address
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    return conf
