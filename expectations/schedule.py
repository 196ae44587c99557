"""Validation every ``dq_interval_minutes`` while the pipeline runs (for ``cryptoflow up``).

``PeriodicValidation(spark, settings).start()`` runs ``run_validation`` in a daemon thread,
first after one interval, then every interval, on what ``cryptoflow validate`` checks by
default (``expectations.tables.validation_tables``): the silver table of each stream kind of
``CRYPTOFLOW_STREAMS`` that exists, then gold; ``stop()`` ends it. A failing run (gold not
created yet, PostgreSQL down) is logged as one line and retried next time: reports never stop
the pipeline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import first_line
from expectations.checkpoint import run_validation, table_exists
from expectations.tables import validation_tables

log = logging.getLogger(__name__)


class PeriodicValidation:
    """``validate(spark, settings, table)`` (default ``run_validation``) on each table every
    ``interval_s`` (default ``dq_interval_minutes``); ``exists(table)`` (default: a Delta
    table is there) picks the silver tables, asked again every round."""

    def __init__(
        self,
        spark,
        settings: Settings,
        validate: Callable[..., object] | None = None,
        interval_s: float | None = None,
        exists: Callable[[str], bool] | None = None,
    ):
        self.spark, self.settings = spark, settings
        self.validate = run_validation if validate is None else validate
        self.exists = (lambda t: table_exists(spark, settings, t)) if exists is None else exists
        self.interval_s = settings.dq_interval_minutes * 60.0 if interval_s is None else interval_s
        self.runs = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dq-validation", daemon=True)

    def start(self) -> PeriodicValidation:
        if self.interval_s > 0:
            self._thread.start()
            kinds = ",".join(k.name for k in self.settings.stream_kinds)
            log.info(
                "periodic validation every %.0f s: silver tables of %s, gold",
                self.interval_s, kinds,
            )  # fmt: skip
        return self

    def tables(self) -> list[str]:
        """This round's tables (``validation_tables``)."""
        return validation_tables(self.settings, self.exists)

    def run_once(self) -> None:
        try:
            tables = self.tables()
        except Exception as e:  # noqa: BLE001 (a report must never stop the pipeline)
            self.errors += 1
            log.warning("periodic validation: listing the tables failed: %s", first_line(e))
            return
        for table in tables:
            try:
                self.validate(self.spark, self.settings, table)
                self.runs += 1
            except Exception as e:  # noqa: BLE001 (a report must never stop the pipeline)
                self.errors += 1
                first = first_line(e)
                log.warning("periodic validation table=%s failed: %s", table, first)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
