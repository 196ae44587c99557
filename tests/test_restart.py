"""Restart safety: PostgreSQL down for ~10 s while the query runs.

SIGKILL of the Spark process mid-stream (three times, with duplicate records in Kafka, then a
clean Ctrl-C stop) is ``tests/test_end_to_end.py::test_spark_killed_three_times_stays_exact``:
the suite pays for one such run, with the simulator, ingestion and the metrics oracle.
"""

from __future__ import annotations

import shutil
import time

import pytest

from cryptoflow.core import db
from cryptoflow.core.services import postgres
from pipelines import job
from tests.conftest import free_port, make_data_dir, wait_until
from tests.pipeline_helpers import (
    expected,
    isolated,
    pg_trades,
    produce_trades,
    trades,
)

pytestmark = pytest.mark.integration


def _silver_keys(spark, s) -> list[tuple[str, int]]:
    df = spark.read.format("delta").load(s.table_path("silver"))
    return [(r.symbol, r.trade_id) for r in df.select("symbol", "trade_id").collect()]


@pytest.mark.timeout(1200)
def test_postgres_down_ten_seconds_retries_and_catches_up(spark, settings, unique, tmp_path):
    data_dir = make_data_dir()
    pg = settings.replace(data_dir=data_dir, postgres_port=free_port())
    postgres.start(pg)
    try:
        db.apply_migrations(postgres.admin_dsn(pg))
        postgres.ensure_login_roles(pg)
        s = isolated(pg, unique, tmp_path).replace(max_offsets_per_trigger=100)
        first, later = trades(240, s.symbols)[:120], trades(240, s.symbols)[120:]
        produce_trades(s, first)
        query = job.start(spark, s)
        try:

            def healthy():
                assert query.exception() is None, f"{query.name} failed: {query.exception()}"
                return True

            wait_until(lambda: healthy() and len(pg_trades(s, s.symbols)) >= 120, 400, 0.5,
                       "first trades mirrored")  # fmt: skip
            postgres.stop(pg)
            stopped = time.monotonic()
            produce_trades(s, later)
            # PostgreSQL is written before Delta silver: a batch over the new records
            # appends them to bronze (beside the serving transaction), retries PostgreSQL
            # while it is down, and commits nothing to silver yet.
            bronze_path = s.table_path("bronze")
            wait_until(
                lambda: (
                    healthy()
                    and spark.read.format("delta").load(bronze_path).count() > 120
                    and time.monotonic() - stopped >= 10
                ),
                400,
                0.5,
                "new trades in bronze with postgres down for 10 s",
            )
            assert len(_silver_keys(spark, s)) == 120  # the batch waits for postgres
            postgres.start(pg)
            wait_until(
                lambda: (
                    healthy()
                    and len(pg_trades(s, s.symbols)) >= 240
                    and len(_silver_keys(spark, s)) >= 240
                ),
                400,
                0.5,
                "postgres and silver to catch up",
            )
        finally:
            job.stop(query)
        assert pg_trades(s, s.symbols) == expected(first + later)
        assert sorted(_silver_keys(spark, s)) == sorted(expected(first + later))
    finally:
        postgres.stop(pg)
        shutil.rmtree(data_dir, ignore_errors=True)
