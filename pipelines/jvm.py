"""The Py4J view of a session's JVM, for the few Delta and Hadoop calls PySpark does not wrap."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from cryptoflow.core.errors import CryptoflowError


def jvm(spark: SparkSession) -> Any:
    """``spark._jvm``, which PySpark clears (None) once the session's context is stopped."""
    view = spark.sparkContext._jvm
    if view is None:
        raise CryptoflowError("the Spark session was stopped: its JVM is gone")
    return view
