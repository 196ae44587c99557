"""``cryptoflow run bronze|silver|gold|all``: the streaming jobs in one Spark application."""

from __future__ import annotations

import argparse
import logging
import signal
import time

from cryptoflow.config import Settings
from pipelines import STAGES, job_module

log = logging.getLogger("cryptoflow.run")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the bronze, silver and/or gold streaming jobs",
        description=(
            "Run one or more streaming jobs in one Spark application: bronze (Kafka -> Delta "
            "bronze), silver (bronze -> validated, deduplicated Delta silver + quarantine, "
            "mirrored to PostgreSQL raw_trades/quarantine), gold (silver -> windowed metrics "
            "-> PostgreSQL metrics). Each job keeps its own checkpoint: running again resumes "
            "where it stopped, without losing or duplicating a row. Prints a status line per "
            "stage every CRYPTOFLOW_RUN_STATUS_INTERVAL_S seconds; Ctrl-C stops cleanly. "
            "Needs the services and schema (`cryptoflow setup`)."
        ),
    )
    p.add_argument(
        "stages",
        nargs="+",
        choices=(*STAGES, "all"),
        metavar="STAGE",
        help="bronze, silver, gold, or all (default order bronze, silver, gold)",
    )
    p.add_argument(
        "--available-now",
        action="store_true",
        help="process what is available now, stage after stage, then exit (drains, benches)",
    )
    p.set_defaults(handler=run)


def selected(stages: list[str]) -> list[str]:
    return list(STAGES) if "all" in stages else [s for s in STAGES if s in stages]


class _StopRequest:
    """Set by SIGINT/SIGTERM; the watch loop notices it between py4j calls, so Ctrl-C never
    interrupts a call into the JVM half-way."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: give up on the clean stop
            raise KeyboardInterrupt
        self.requested = True
        log.info("stop requested (%s)", signal.Signals(signum).name)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cryptoflow.spark import get_spark
    from pipelines.progress import BatchLogger, status_line, stop_between_batches

    stages = selected(args.stages)
    jobs = {stage: job_module(stage) for stage in stages}
    spark = get_spark(settings, "cryptoflow-" + "-".join(stages))
    stop = _StopRequest()  # after the SparkContext, whose SIGINT handler cancels every job
    spark.streams.addListener(BatchLogger([s for s in stages if s != "silver"]))
    queries = []
    try:
        if args.available_now:
            for stage in stages:
                if stop.requested:
                    return 0
                q = jobs[stage].start(spark, settings, available_now=True)
                queries.append(q)
                while q.isActive and not stop.requested:
                    time.sleep(0.5)
                if q.exception() is not None:
                    log.error("%s failed: %s", stage, str(q.exception()).strip().splitlines()[0])
                    return 1
                log.info("%s drained: %s", stage, status_line([q]))
            return 0
        queries = [jobs[stage].start(spark, settings) for stage in stages]
        restart = lambda q: jobs[q.name].start(spark, settings)  # noqa: E731
        return _watch(queries, settings.run_status_interval_s, status_line, stop, restart)
    except KeyboardInterrupt:
        log.info("stopping %s", ", ".join(stages))
        return 0
    finally:
        try:
            stop_between_batches(queries)
        except Exception as e:  # noqa: BLE001 (best effort while shutting down)
            log.warning("stopping queries: %s", e)
        spark.stop()
        log.info("stopped")


#: Spark 4.1.1's Kafka source fails the first batch after a restart from an uncommitted batch
#: with this NPE in ``KafkaMicroBatchStream.metrics`` (SPARK-55271); starting again works.
SPARK_55271 = 'because the return value of "scala.Option.get()" is null'


def _watch(queries, interval: float, status_line, stop: _StopRequest, restart) -> int:
    """Print a status line every ``interval`` seconds until a query fails or a stop is asked.
    A query hit by SPARK-55271 before its first batch is restarted (``restart(query)``)."""
    next_status = time.monotonic() + interval
    while not stop.requested:
        for i, q in enumerate(queries):
            if not q.isActive:
                err = q.exception()
                if err is not None:
                    first = str(err).strip().splitlines()[0]
                    if SPARK_55271 in first and not q.recentProgress:
                        log.warning("%s hit SPARK-55271 on its first batch: restarting", q.name)
                        queries[i] = restart(q)
                        continue
                    log.error("%s stopped with an error: %s", q.name, first)
                    return 1
                log.info("%s finished", q.name)
                return 0
        if time.monotonic() >= next_status:
            print(status_line(queries), flush=True)
            next_status += interval
        time.sleep(0.5)
    log.info("stopping %s", ", ".join(q.name for q in queries))
    return 0
