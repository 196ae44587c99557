"""The Py4J view of a session's JVM, for the few Delta and Hadoop calls PySpark does not wrap."""

from __future__ import annotations

from typing import Any

from py4j.java_gateway import JavaClass
from pyspark.sql import SparkSession

from cryptoflow.core.errors import CryptoflowError


def jvm(spark: SparkSession) -> Any:
    """``spark._jvm``, which PySpark clears (None) once the session's context is stopped."""
    view = spark.sparkContext._jvm
    if view is None:
        raise CryptoflowError("the Spark session was stopped: its JVM is gone")
    return view


def java_class(spark: SparkSession, name: str) -> Any:
    """The JVM class ``name`` (fully qualified), for its static methods. Unlike
    ``jvm(spark).org.apache…``, which asks the JVM about every package segment (a failed
    ``Class.forName`` each, ~3% of the driver's CPU at the live rate), this names it once."""
    return JavaClass(name, jvm(spark)._gateway_client)


def delta_log(spark: SparkSession, path: str) -> Any:
    """The ``DeltaLog`` of the table at ``path`` (the JVM object)."""
    return java_class(spark, "org.apache.spark.sql.delta.DeltaLog").forTable(
        spark._jsparkSession, path
    )


def latest_snapshot(spark: SparkSession, path: str) -> Any:
    """The table's snapshot at its latest version, from a listing of its log (no Spark job)."""
    none = java_class(spark, "scala.Option").empty()
    return delta_log(spark, path).update(False, none, none)
