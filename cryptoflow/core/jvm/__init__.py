"""A local file system for Hadoop that does not start a process per file, and a Delta log
store that does not stat every file of a table's log on each snapshot update.

Without Hadoop's native library (pip's pyspark has none), Hadoop's local file system runs
``chmod`` for every file it creates and ``readlink`` for every link lookup: about 16
processes per Delta append, a third of a small append's time on two cores. The Java sources
next to this module override just those two calls with ``java.nio``. Delta's local log store
stats every file of ``_delta_log`` on each snapshot update, and a streaming table's log
holds every commit of the retention window; ``NioLocalLogStore`` stats only the files it
returns. The sources are compiled once against pyspark's Hadoop and Delta's storage JAR into
the JAR cache. Without ``javac`` (a JRE only) Spark keeps Hadoop's file system and Delta's
log store and everything works, only slower.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from cryptoflow.core.errors import ServiceError
from cryptoflow.core.jars import SPARK_JARS, artifact_name, jar_paths

log = logging.getLogger(__name__)

SOURCES = sorted((Path(__file__).parent / "io").rglob("*.java"))
FILE_SYSTEM = "io.cryptoflow.hadoop.NioLocalFileSystem"
FILE_CONTEXT = "io.cryptoflow.hadoop.NioLocalFs"
LOG_STORE = "io.cryptoflow.delta.NioLocalLogStore"


def _hadoop_api_jar() -> Path:
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    if not jars:
        raise ServiceError("pyspark ships no hadoop-client-api JAR: is pyspark installed fully?")
    return jars[-1]


def _delta_storage_jar(cache: Path) -> Path:

    jars = [j for j in jar_paths(cache, SPARK_JARS) if artifact_name(j) == "delta-storage"]
    if not jars:
        raise ServiceError(f"no delta-storage JAR in {cache}: run `cryptoflow setup`")
    return jars[0]


def _javac() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "javac").exists():
        return str(Path(home) / "bin" / "javac")
    java = shutil.which("java")
    beside = Path(os.path.realpath(java)).parent / "javac" if java else None
    return str(beside) if beside and beside.exists() else shutil.which("javac")


def local_fs_jar(cache: Path) -> Path | None:
    """The compiled JAR (file system and log store) in ``cache``, built on first use; None
    when it cannot be built (no javac), and Spark then keeps Hadoop's and Delta's own."""
    api, delta = _hadoop_api_jar(), _delta_storage_jar(cache)
    digest = hashlib.sha1(f"{api.name} {delta.name}".encode())
    for src in SOURCES:
        digest.update(src.read_bytes())
    jar = cache / f"hadoop-nio-{digest.hexdigest()[:10]}" / "cryptoflow-hadoop-nio.jar"
    if jar.exists():
        return jar
    javac = _javac()
    if not SOURCES:
        log.warning("the Java sources of %s are missing: Hadoop's local file system", __name__)
        return None
    if javac is None:
        log.info("no javac: Spark uses Hadoop's local file system (a process per file written)")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        classes = Path(tmp)
        classpath = os.pathsep.join([str(api), str(delta)])
        cmd = [javac, "--release", "17", "-nowarn", "-cp", classpath, "-d", str(classes)]
        proc = subprocess.run(  # its own session: a stop signal to `up` is not for it
            [*cmd, *map(str, SOURCES)], capture_output=True, text=True, start_new_session=True
        )
        if proc.returncode != 0:  # only slower without it: say why, and go on
            log.warning("javac could not build %s, so Spark uses Hadoop's local file system: %s",
                        jar.name, proc.stderr.strip()[:400])  # fmt: skip
            return None
        jar.parent.mkdir(parents=True, exist_ok=True)
        staging = jar.with_suffix(f".{os.getpid()}.part")
        with zipfile.ZipFile(staging, "w") as z:
            for f in sorted(classes.rglob("*.class")):
                z.write(f, f.relative_to(classes).as_posix())
        staging.replace(jar)  # atomic: a concurrent build writes the same bytes
    log.info("built %s", jar)
    return jar


def local_fs_conf(jar: Path, cache: Path) -> dict[str, str]:
    """Spark settings that make ``file:`` paths use the JAR's file system and Delta's
    ``file:`` tables its log store.

    The JAR goes on the driver's JVM classpath (``spark.jars`` is loaded too late: Spark
    resolves files before it), and with it Delta's storage JAR, which the log store extends
    (the class loader of ``spark.jars`` asks this one first, so there is one copy)."""
    return {
        "spark.driver.extraClassPath": os.pathsep.join([str(jar), str(_delta_storage_jar(cache))]),
        "spark.hadoop.fs.file.impl": FILE_SYSTEM,
        "spark.hadoop.fs.AbstractFileSystem.file.impl": FILE_CONTEXT,
        "spark.delta.logStore.file.impl": LOG_STORE,
    }
