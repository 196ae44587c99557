"""JARs from Maven Central, resolved once with Maven into a local cache.

Sets live side by side in the cache: ``spark/`` (Delta and the Kafka connector, added to
the Spark driver's classpath), ``s3/`` (hadoop-aws and the AWS SDK modules it needs, added
only when the lake or the checkpoints are on ``s3a://``), ``kafka/`` (a complete Apache
Kafka broker) and ``docs/`` (WebJars whose JavaScript, CSS and fonts make the Data Docs work
offline, declared in ``expectations.docs_assets``). After the first ``cryptoflow setup``
nothing here needs the network.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptoflow.core.errors import ServiceError

log = logging.getLogger(__name__)

SPARK_VERSION = "4.1.1"  # must equal the pinned pyspark version
SCALA = "2.13"
DELTA_VERSION = "4.4.0"  # the JAR that matches the pinned delta-spark wheel
KAFKA_VERSION = "4.1.2"  # the embedded broker
HADOOP_VERSION = "3.4.2"  # the hadoop-client pyspark ships (jars/hadoop-client-api-*.jar)
AWS_SDK_VERSION = "2.29.52"  # the AWS SDK v2 hadoop-aws 3.4.2 is built against


@dataclass(frozen=True)
class JarSet:
    name: str
    artifacts: tuple[str, ...]  # group:artifact:version
    exclude_artifacts: tuple[str, ...] = ()
    transitive: bool = True  # False: exactly the listed artifacts, none of their dependencies

    def directory(self, cache: Path) -> Path:
        return cache / f"{self.name}-{_digest(self)}"


SPARK_JARS = JarSet(
    "spark",
    (
        f"io.delta:delta-spark_{SPARK_VERSION.rsplit('.', 1)[0]}_{SCALA}:{DELTA_VERSION}",
        f"org.apache.spark:spark-sql-kafka-0-10_{SCALA}:{SPARK_VERSION}",
    ),
    # pyspark ships these; a second copy on the classpath only causes conflicts.
    exclude_artifacts=("scala-library", "scala-reflect", "slf4j-api", "jsr305", "commons-logging"),
)
#: S3A (``s3a://``): hadoop-aws without the 600 MB ``software.amazon.awssdk:bundle`` it
#: declares, plus the SDK modules S3A loads: the S3 client, its transfer manager and STS
#: (assumed-role credentials). Proven against the embedded SeaweedFS (tests/test_scale_out.py).
S3_JARS = JarSet(
    "s3",
    (
        f"org.apache.hadoop:hadoop-aws:{HADOOP_VERSION}",
        f"software.amazon.awssdk:s3:{AWS_SDK_VERSION}",
        f"software.amazon.awssdk:s3-transfer-manager:{AWS_SDK_VERSION}",
        f"software.amazon.awssdk:sts:{AWS_SDK_VERSION}",
    ),
    exclude_artifacts=("bundle", "slf4j-api", "jsr305", "commons-logging"),
)
KAFKA_JARS = JarSet(
    "kafka",
    (
        f"org.apache.kafka:kafka_{SCALA}:{KAFKA_VERSION}",
        "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",
        "org.apache.logging.log4j:log4j-core:2.24.3",
    ),
)


def _digest(js: JarSet) -> str:
    import hashlib

    parts = js.artifacts + js.exclude_artifacts + (() if js.transitive else ("no-transitive",))
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]


def _pom(js: JarSet) -> str:
    deps = []
    for coord in js.artifacts:
        group, artifact, version = coord.split(":")
        deps.append(
            f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version></dependency>"
        )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>cryptoflow</groupId><artifactId>jars-{js.name}</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>{"".join(deps)}</dependencies>
</project>"""


def _settings_xml(repo_url: str) -> str:
    # Spark's POMs name extra repositories that may be unreachable; route everything to one.
    return f"""<settings><mirrors><mirror><id>cryptoflow-central</id><mirrorOf>*</mirrorOf>
  <url>{repo_url}</url></mirror></mirrors></settings>"""


def jar_paths(cache: Path, js: JarSet) -> list[Path]:
    """JARs of a resolved set; a clear error when the cache was never filled."""
    directory = js.directory(cache)
    if not (directory / ".complete").exists():
        raise ServiceError(
            f"JAR cache for {js.name} is missing at {directory}: run `cryptoflow setup` "
            "once with access to Maven Central (it caches them for offline use)"
        )
    return sorted(directory.glob("*.jar"))


def ensure_jars(cache: Path, js: JarSet, repo_url: str) -> tuple[Path, bool]:
    """Resolve ``js`` into the cache unless present. Returns (directory, downloaded?)."""
    directory = js.directory(cache)
    if (directory / ".complete").exists():
        return directory, False
    mvn = shutil.which("mvn")
    if not mvn:
        raise ServiceError(
            "Maven (`mvn`) is not installed and the JAR cache is empty: "
            "install it (apt-get install -y maven) and run `cryptoflow setup`"
        )
    staging = directory.with_name(directory.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _copy_dependencies(mvn, js, staging, repo_url)
        (staging / ".complete").write_text("\n".join(js.artifacts) + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory, True


def _copy_dependencies(mvn: str, js: JarSet, target: Path, repo_url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pom, settings = Path(tmp) / "pom.xml", Path(tmp) / "settings.xml"
        pom.write_text(_pom(js))
        settings.write_text(_settings_xml(repo_url))
        cmd = [
            mvn, "-q", "-B", "-U", "-f", str(pom), "-s", str(settings),
            "dependency:copy-dependencies", f"-DoutputDirectory={target}",
            "-DincludeScope=runtime",
        ]  # fmt: skip
        if js.exclude_artifacts:
            cmd.append(f"-DexcludeArtifactIds={','.join(js.exclude_artifacts)}")
        if not js.transitive:
            cmd.append("-DexcludeTransitive=true")
        # its own session: a stop signal to the command (`up`) is not for it
        proc = subprocess.run(cmd, capture_output=True, text=True, start_new_session=True)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).splitlines()
        reason = next((ln for ln in lines if "Failed to execute" in ln), lines[-1] if lines else "")
        raise ServiceError(
            f"Maven could not resolve the {js.name} JARs from {repo_url} "
            f"(is it reachable? set CRYPTOFLOW_MAVEN_REPO for a mirror): {reason[:400]}"
        )


_VERSIONED = re.compile(r"^(?P<artifact>.+?)-\d[^-]*(?:-[\w.]+)*\.jar$")


def artifact_name(jar: Path) -> str:
    """``jackson-core-2.13.5.jar`` -> ``jackson-core``."""
    m = _VERSIONED.match(jar.name)
    return m.group("artifact") if m else jar.stem


def spark_classpath(cache: Path, s3a: bool = False) -> list[Path]:
    """Cached Spark JARs (and, with ``s3a``, the S3A set) minus artifacts pyspark already
    ships (its versions win)."""
    import pyspark

    shipped = {artifact_name(j) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    jars = jar_paths(cache, SPARK_JARS) + (jar_paths(cache, S3_JARS) if s3a else [])
    return [j for j in jars if artifact_name(j) not in shipped]
