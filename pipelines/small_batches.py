"""Small micro-batches (a live stream's: a few hundred records) run cheaper than large ones.

Most of a small batch's Spark work is fixed cost per task, not per row (JFR profiles of the
pipeline at 30 trades/s with four stream kinds, docs/pipelines.md "Performance"):

* Spark runs a projection that is not part of whole-stage code (the parse and validation
  projections, which JSON parsing and higher-order functions keep out of it; the Kafka
  reader's row conversion; Delta's writers and their statistics) by generating its Java
  source in every task, then finding the compiled class in its cache. That generation was
  about a fifth of the Spark CPU; an interpreted projection costs a small batch less. On a
  batch of tens of thousands of records the compiled code is faster per row and wins.
* Each Delta append ran a task per partition of the batch, each deserialising the job's
  Hadoop configuration and opening a file of its own: one task and one file do.

A batch cannot count its records before its first job, so it follows the batch before it:
a live stream's batches are alike, and a backlog's first batch is large.

Only the driver placement (one machine, where it was measured) runs small batches: in the
executor placement the scale-out test's batches took longer with them (all trades served
157 s after a broker's kill against 108 s without, tests/test_scale_out.py).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

#: Spark's (internal) choice between generated and interpreted projections.
FACTORY_MODE = "spark.sql.codegen.factoryMode"
GENERATED = "FALLBACK"  # Spark's default: generated, interpreted where generation fails
INTERPRETED = "NO_CODEGEN"


def is_small(previous_rows: int | None, small_rows: int) -> bool:
    """True after a batch of fewer than ``small_rows`` records; never for a run's first
    batch (``previous_rows`` None), which may drain a backlog, nor when ``small_rows`` is 0
    (``CRYPTOFLOW_SMALL_BATCH_ROWS``)."""
    return previous_rows is not None and previous_rows < small_rows


def run_as(spark: SparkSession, small: bool) -> None:
    """Run the projections of ``spark``'s next jobs interpreted when ``small``, else
    generated. The setting travels with each job to its tasks, here or on a cluster."""
    spark.conf.set(FACTORY_MODE, INTERPRETED if small else GENERATED)


def for_appends(batch: DataFrame, small: bool) -> DataFrame:
    """``batch`` as the Delta appends read it: one partition (a task and a file per table)
    when ``small``."""
    return batch.coalesce(1) if small else batch
