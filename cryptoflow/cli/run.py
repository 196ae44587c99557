"""``cryptoflow run``: the pipeline's streaming query, in one Spark application."""

from __future__ import annotations

import argparse
import logging
import signal
import time

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ConfigError, first_line
from cryptoflow.core.signals import STOP_SIGNALS

log = logging.getLogger("cryptoflow.run")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the pipeline's streaming query (Kafka -> PostgreSQL, bronze, silver, gold)",
        description=(
            "Run the pipeline's one streaming query: each micro-batch of Kafka records is "
            "parsed, validated and deduplicated, served to PostgreSQL in one transaction "
            "(raw_trades, quarantine and the windowed metrics folded from the new trades) and "
            "appended to the Delta bronze, silver and quarantine tables; Delta gold copies the "
            "folded windows every CRYPTOFLOW_GOLD_SYNC_INTERVAL_MS. One checkpoint: running "
            "again resumes where it stopped, without losing or repeating a record. Prints a "
            "status line every CRYPTOFLOW_RUN_STATUS_INTERVAL_S seconds; Ctrl-C stops cleanly. "
            "Needs the services and schema (`cryptoflow setup`)."
        ),
    )
    p.add_argument(
        "stages",
        nargs="*",
        metavar="STAGE",
        help="all (the default) or trades: the one query there is (kept for scripts)",
    )
    p.add_argument(
        "--available-now",
        action="store_true",
        help="process what Kafka holds now, bring Delta gold up to date, then exit (drains)",
    )
    p.set_defaults(handler=run)


class _StopRequest:
    """Set by SIGINT, SIGTERM or SIGHUP (``cryptoflow.core.signals.STOP_SIGNALS``); the watch
    loop notices it between py4j calls, so a stop never interrupts a call into the JVM
    half-way. A second Ctrl-C gives up on the clean stop; a repeated SIGTERM or SIGHUP does
    not (``uv run`` passes a SIGTERM to its process group on, so it arrives twice)."""

    def __init__(self) -> None:
        self.requested = False
        self.install()

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            if signum == signal.SIGINT:  # a second Ctrl-C: give up on the clean stop
                raise KeyboardInterrupt
            return
        self.requested = True
        log.info("stop requested (%s)", signal.Signals(signum).name)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cryptoflow.core.spark import get_spark, stop_spark
    from pipelines import job
    from pipelines.log_checkpoints import stop_checkpointer
    from pipelines.progress import FailureLogger, status_line

    unknown = sorted(set(args.stages) - {"all", job.QUERY})
    if unknown:
        raise ConfigError(
            f"unknown stage(s) {', '.join(unknown)}: the pipeline is one query now; run "
            "`cryptoflow run` (bronze, silver and gold are written by every micro-batch)"
        )
    stop = _StopRequest()  # a stop while Spark starts ends the command once it has started
    spark = get_spark(settings, "cryptoflow-run")
    stop.install()  # again: the SparkContext replaced the SIGINT handler (it cancels every job)
    query = None
    try:
        if stop.requested:
            return 0
        spark.streams.addListener(FailureLogger())
        if args.available_now:
            try:
                drained = job.drain(spark, settings, lambda: stop.requested)
            except Exception as e:  # noqa: BLE001 - the command's one line on failure
                log.error("%s failed: %s", job.QUERY, first_line(e))
                return 1
            log.info("%s drained: %s", job.QUERY, status_line([drained]))
            return 0
        query = job.start(spark, settings)

        def restart(q):
            q.gold.stop(final=False)
            return job.start(spark, settings)

        queries = [query]
        try:
            return _watch(queries, settings.run_status_interval_s, status_line, stop, restart)
        finally:
            query = queries[0]
    except KeyboardInterrupt:
        log.info("stopping %s", job.QUERY)
        return 0
    finally:
        if query is not None:
            try:
                job.stop(query)
            except Exception as e:  # noqa: BLE001 (best effort while shutting down)
                log.warning("stopping the query: %s", first_line(e))
        try:
            stop_checkpointer(spark)
        except Exception as e:  # noqa: BLE001 (best effort while shutting down)
            log.warning("stopping the delta log checkpoints: %s", first_line(e))
        stop_spark(spark)
        log.info("stopped")


def _watch(queries, interval: float, status_line, stop: _StopRequest, restart) -> int:
    """Print a status line every ``interval`` seconds until a query fails or a stop is asked.
    A query hit by SPARK-55271 before its first batch is restarted (``restart(query)``)."""
    from pipelines.job import hit_spark_55271  # Spark's imports only for commands using it

    next_status = time.monotonic() + interval
    while not stop.requested:
        for i, q in enumerate(queries):
            if not q.isActive:
                err = q.exception()
                if err is not None:
                    first = first_line(err)
                    if hit_spark_55271(q):
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
