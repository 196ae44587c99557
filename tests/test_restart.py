"""Restart safety: SIGKILL of the Spark process mid-stream, and PostgreSQL down for ~10 s."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from cryptoflow.core import db
from cryptoflow.core.services import postgres
from pipelines import job
from tests.conftest import free_port, make_data_dir, wait_until
from tests.pipeline_helpers import (
    env_for,
    expected,
    isolated,
    pg_rows,
    pg_trades,
    produce_trades,
    trades,
)

pytestmark = pytest.mark.integration


def _pg_quarantined(s) -> int:
    return pg_rows(s, "SELECT count(*) FROM quarantine WHERE topic = %s", (s.kafka_topic,))[0][0]


def _silver_keys(spark, s) -> list[tuple[str, int]]:
    df = spark.read.format("delta").load(s.table_path("silver"))
    return [(r.symbol, r.trade_id) for r in df.select("symbol", "trade_id").collect()]


@pytest.mark.timeout(1500)
def test_sigkill_mid_stream_three_times_loses_and_duplicates_nothing(
    request, settings, unique, tmp_path
):
    # Small batches, so every kill lands in the middle of the stream.
    s = isolated(settings, unique, tmp_path).replace(
        max_offsets_per_trigger=40, run_status_interval_s=2
    )
    payloads = trades(240, s.symbols)
    produce_trades(s, payloads + payloads[:20])  # 20 duplicates as well
    want = expected(payloads)
    log_path = tmp_path / "run.log"
    cmd = [sys.executable, "-m", "cryptoflow", "run"]
    rng = random.Random(unique)

    def launch() -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                cmd, env=env_for(s), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    proc = None

    try:
        for kill in range(3):
            proc = launch()
            target = (kill + 1) * len(want) // 4 + rng.randint(-20, 20)
            wait_until(
                lambda t=target, p=proc: p.poll() is not None or len(pg_trades(s, s.symbols)) >= t,
                600,
                1.0,
                f"{target} trades in postgres before kill {kill + 1}",
            )
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(rng.uniform(0, 1.5))  # a random moment inside the next batch
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        proc = launch()
        wait_until(
            lambda: (
                proc.poll() is not None
                or (len(pg_trades(s, s.symbols)) >= len(want) and _pg_quarantined(s) >= 20)
            ),
            600,
            1.0,
            "every trade and duplicate in postgres after the last restart",
        )
        assert proc.poll() is None, log_path.read_text()[-3000:]
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert proc.wait(120) == 0
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert pg_trades(s, s.symbols) == want
    assert _pg_quarantined(s) == 20
    spark = request.getfixturevalue("spark")  # only now: not competing with the subprocess
    keys = _silver_keys(spark, s)
    assert len(keys) == len(set(keys)) == len(want)
    assert set(keys) == set(want)
    quarantine = spark.read.format("delta").load(s.table_path("quarantine"))
    assert quarantine.count() == 20  # each duplicate quarantined once, despite the replays
    bronze = spark.read.format("delta").load(s.table_path("bronze"))
    assert bronze.count() == len(payloads) + 20


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
