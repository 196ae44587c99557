"""Runs a Python function in the executors of the configured Spark master, through the
project's own session factory, and prints what they saw as one JSON line:

    python -m tests.cluster_probe

For each of ``CRYPTOFLOW_SPARK_EXECUTOR_*``-sized tasks (one per executor core of the
cluster): the file ``pipelines.batch`` was imported from (inside the shipped code zip, not
the checkout), the interpreter, and the pid and working directory of the Python worker;
and the file the driver imported ``pipelines.batch`` from (the checkout).
"""

from __future__ import annotations

import json
import os
import sys


def _seen(_: object) -> list[dict]:
    import pipelines.batch

    return [{"module": pipelines.batch.__file__, "python": sys.executable, "pid": os.getpid(),
             "cwd": os.getcwd()}]  # fmt: skip


def main() -> None:
    from cryptoflow.core.config import load_settings
    from cryptoflow.core.spark import get_spark, stop_spark

    spark = get_spark(load_settings(), "cryptoflow-cluster-probe")
    try:
        sc = spark.sparkContext
        partitions = 4
        seen = sc.parallelize(range(partitions), partitions).mapPartitions(_seen).collect()
        executors = sc._jsc.sc().getExecutorMemoryStatus().size() - 1  # minus the driver
        import pipelines.batch  # the driver's own import, after the session started

        print(json.dumps({"master": sc.master, "executors": executors, "tasks": seen,
                          "driver_module": pipelines.batch.__file__}))  # fmt: skip
    finally:
        stop_spark(spark)


if __name__ == "__main__":
    main()
