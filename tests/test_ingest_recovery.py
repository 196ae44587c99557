"""Recovery: the broker down for 10 s mid-stream, and ingestion itself SIGKILLed and restarted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryptoflow.core.services import kafka
from cryptoflow.core.streams import AGG_TRADE
from ingestion.simulator.options import SimulatorOptions
from ingestion.simulator.runner import run_simulator_in_thread, start_simulator_process
from tests.conftest import free_port, make_data_dir, make_settings, wait_until
from tests.ingest_helpers import (
    client,
    ingesting,
    kind_ids,
    read_topic,
    recorded_ids,
    rest_agg_ids,
    seed_resume_point,
    trade_ids,
)

pytestmark = pytest.mark.integration

OUTAGE_S = 10


def test_broker_down_10s_mid_stream_loses_nothing(settings, unique, tmp_path):
    own = make_settings(make_data_dir())  # a broker of our own: the session's stays up
    kafka.start(own)
    try:
        record = tmp_path / "record.jsonl"
        opts = SimulatorOptions(port=0, seed=11, rate=90, max_trades=500, record=record)
        with run_simulator_in_thread(own, opts) as sim:
            # a small buffer, so the 10 s outage overflows it and the reader must wait
            s = client(sim, own, unique, producer_buffer_messages=300, gap_probe_idle_s=2)
            seeded = seed_resume_point(sim, s)
            with ingesting(s) as ing:
                wait_until(lambda: ing.stats.delivered > 100, 60, what="deliveries")
                kafka.stop(own)
                down_at, delivered = time.monotonic(), ing.stats.delivered
                wait_until(
                    lambda: time.monotonic() - down_at >= OUTAGE_S,
                    OUTAGE_S + 30,
                    what="the outage to last",
                )
                assert ing.stats.delivered == delivered  # really down
                assert ing.stats.backpressure_waits > 0  # the bounded buffer filled up
                kafka.start(own)
                wait_until(lambda: sim.finished, 120, what="the simulator to finish")
                want = recorded_ids(record)
                wait_until(lambda: ing.caught_up(want), 120, what="ingestion to catch up")
            stats = ing.finish()
        got = [k for k in trade_ids(read_topic(s, s.kafka_topic)) if k not in seeded]
        assert set(got) == want
        assert stats.ids_unfillable == 0
    finally:
        kafka.stop(own)
        shutil.rmtree(own.data_dir, ignore_errors=True)


def _ingest_process(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "cryptoflow"), "ingest", "--source", "sim"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_sigkill_and_restart_backfills_the_trades_made_meanwhile(settings, unique, tmp_path):
    record = tmp_path / "record.jsonl"
    sim_settings = settings.replace(sim_port=free_port())
    opts = SimulatorOptions(seed=5, rate=90, max_trades=600, record=record)
    with start_simulator_process(sim_settings, opts) as sim:
        s = sim_settings.replace(
            source="sim",
            kafka_topic_prefix=f"ingest-kill-{unique}",
            ws_backoff_initial_ms=100,
            status_interval_s=1,
            gap_probe_idle_s=2,
        )
        seeded = seed_resume_point(sim, s)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOFLOW_")}
        env.update(s.to_env())
        log = tmp_path / "ingest.log"

        def in_kafka() -> set[tuple[str, int]]:
            return set(trade_ids(read_topic(s, s.kafka_topic))) - seeded

        def aggs_in_kafka() -> set[tuple[str, int]]:
            return set(kind_ids(read_topic(s, s.topic(AGG_TRADE)), AGG_TRADE))

        def aggs_want() -> set[tuple[str, int]]:
            """Every aggregate trade the simulator made since the first one ingested."""
            got = aggs_in_kafka()
            firsts = {sym: min(a for x, a in got if x == sym) for sym, _ in got}
            return {
                (sym, a) for sym, first in firsts.items() for a in rest_agg_ids(sim, sym, first)
            }

        first = _ingest_process(env, log)
        try:
            wait_until(lambda: len(in_kafka()) > 150, 90, what="the first run to deliver")
        finally:
            first.kill()  # SIGKILL: no flush, no goodbye
            first.wait(10)
        generated = sim.stats()["trades_generated"]
        wait_until(  # (on a slow machine the simulator may already have finished)
            lambda: sim.stats()["trades_generated"] >= generated + 150 or sim.stats()["finished"],
            60,
            what="trades made while ingestion is down",
        )
        second = _ingest_process(env, log)
        try:
            wait_until(lambda: sim.stats()["finished"], 120, what="the simulator to finish")
            want = recorded_ids(record)
            wait_until(lambda: want <= in_kafka(), 120, what="every recorded trade in Kafka")
            # aggregate trades resume from their own topic: the ones made meanwhile backfilled
            wait_until(lambda: aggs_want() <= aggs_in_kafka(), 120, what="every aggTrade")
            agg_want = aggs_want()
        finally:
            second.send_signal(signal.SIGINT)
            code = second.wait(60)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert in_kafka() == want
    assert aggs_in_kafka() == agg_want
    assert len({sym for sym, _ in aggs_in_kafka()}) == 3
    assert "resume from topic=" in text
    for kind in ("trade", "aggTrade"):  # found on the stream or by the quiet-symbol probe
        assert any(" gap " in ln and f"kind={kind} " in ln for ln in text.splitlines()), kind
    assert "stopped frames/s=" in text  # clean shutdown printed the final status
