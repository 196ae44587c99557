"""Ingestion against the simulator and the real broker: faults, outages, crashes, malformed."""

from __future__ import annotations

import collections

import pytest

from ingestion.resume import murmur2_partition
from ingestion.simulator.options import SimulatorOptions
from ingestion.simulator.runner import run_simulator_in_thread
from tests.conftest import wait_until
from tests.ingest_helpers import (
    client,
    ingesting,
    read_topic,
    recorded_ids,
    seed_resume_point,
    trade_ids,
)

pytestmark = pytest.mark.integration


def test_drops_skips_and_shutdown_lose_nothing(settings, unique, tmp_path):
    record = tmp_path / "record.jsonl"
    opts = SimulatorOptions(
        port=0,
        seed=7,
        rate=150,
        max_trades=500,
        record=record,
        drop_every=1.5,
        skip_ids=4,
        skip_every=90,
        malformed_every=70,
        shutdown_grace=1.0,
    )
    with run_simulator_in_thread(settings, opts) as sim:
        s = client(sim, settings, unique, ws_rotate_overlap_s=1, gap_probe_idle_s=2)
        seeded = seed_resume_point(sim, s)
        with ingesting(s) as ing:
            wait_until(lambda: ing.stats.frames > 200, 60, what="some live frames")
            sim.announce_shutdown()
            wait_until(lambda: sim.finished, 120, what="the simulator to finish")
            want = recorded_ids(record)
            wait_until(lambda: ing.caught_up(want), 60, what="ingestion to see the last trades")
        stats = ing.finish()
        sim_stats = sim.stats()

    records = read_topic(s, s.kafka_topic)
    got = [k for k in trade_ids(records) if k not in seeded]
    assert set(got) == want
    assert sim_stats["trades_skipped"] > 0 and sim_stats["connections_dropped"] > 0
    assert stats.ids_filled >= sim_stats["trades_skipped"]
    assert stats.ids_unfillable == 0
    # duplicates: exactly the counted ones, each delivered by two different connections
    counts = collections.Counter(got)
    assert sum(n - 1 for n in counts.values()) == stats.duplicates
    by_conn = collections.defaultdict(set)
    for r in records:
        t = r.trade()
        if t is not None:
            by_conn[(t["s"], t["t"])].add(r.headers["connection"])
    assert all(len(by_conn[k]) == n for k, n in counts.items() if n > 1)
    # malformed frames are in Kafka, flagged and counted
    flagged = [r for r in records if r.invalid]
    assert stats.invalid == len(flagged) > 0
    reasons = collections.Counter(r.invalid.split(":")[0] for r in flagged)
    assert set(reasons) <= {"invalid JSON", "not a trade", "missing field t"}, reasons
    assert {r.headers["source"] for r in records} == {b"simulator", b"backfill"}
    assert all(r.partition == murmur2_partition(r.key, 3) for r in records)
