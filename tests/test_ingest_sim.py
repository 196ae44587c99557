"""Ingestion against the simulator and the real broker: faults, outages, crashes, malformed."""

from __future__ import annotations

import collections
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptoflow.config import Settings
from cryptoflow.services import kafka
from ingestion.frames import rest_trade_frame
from ingestion.producer import FrameProducer
from ingestion.resume import murmur2_partition
from ingestion.runner import run_ingestion
from ingestion.simulator.options import SimulatorOptions
from ingestion.simulator.record import read_record
from ingestion.simulator.runner import run_simulator_in_thread
from ingestion.status import IngestStats
from tests.conftest import wait_until
from tests.ingest_helpers import read_topic, trade_ids

pytestmark = pytest.mark.integration


class IngestThread:
    """``run_ingestion`` in a background thread, like ``cryptoflow up`` runs it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.stats = IngestStats()  # live counters
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def _run(self) -> None:
        try:
            run_ingestion(self.settings, stop_event=self.stop, stats=self.stats)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def finish(self, timeout: float = 90) -> IngestStats:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "ingestion did not stop"
        if self.error:
            raise self.error
        return self.stats

    def caught_up(self, want: set[tuple[str, int]]) -> bool:
        """The last recorded id of every symbol was seen and no gap is being filled."""
        last: dict[str, int] = {}
        for sym, tid in want:
            last[sym] = max(tid, last.get(sym, tid))
        st = self.stats
        if self.error:
            raise self.error
        return st.gaps_open == 0 and all(st.last_trade_id.get(k) == v for k, v in last.items())


@contextlib.contextmanager
def ingesting(settings: Settings) -> Iterator[IngestThread]:
    t = IngestThread(settings)
    t.thread.start()
    try:
        yield t
    finally:
        if t.thread.is_alive():
            t.stop.set()
            t.thread.join(90)


def recorded_ids(path: Path) -> set[tuple[str, int]]:
    return {(r["s"], r["t"]) for r in read_record(path)}


def _first_trade(url: str) -> dict | None:
    with urllib.request.urlopen(url, timeout=10) as r:
        page = json.loads(r.read())
    return page[0] if page else None


def seed_resume_point(handle, s: Settings) -> set[tuple[str, int]]:
    """Produce, per symbol, a frame with the id just before the simulator's first trade, as if
    an earlier ingestion run had stopped there: the run under test must then resume and
    backfill every trade the simulator made, including those before it connected."""
    seeded = set()
    stats = IngestStats()
    producer = FrameProducer(s, stats)
    kafka.ensure_topic(s)
    for symbol in s.symbols:
        url = f"{handle.rest_url}/api/v3/historicalTrades?symbol={symbol}&fromId=0&limit=1"
        first = wait_until(lambda u=url: _first_trade(u), 30, what=f"a {symbol} trade")
        frame = rest_trade_frame(symbol, {**first, "id": first["id"] - 1})
        producer.produce_blocking(
            s.kafka_topic,
            symbol.encode(),
            frame,
            int(time.time() * 1000),
            [("source", b"simulator"), ("connection", b"seed")],
        )
        seeded.add((symbol, first["id"] - 1))
    assert producer.flush(30) == 0
    return seeded


def client(handle, settings: Settings, unique: str, **overrides) -> Settings:
    values = dict(
        kafka_topic=f"ingest-{unique}",
        ws_backoff_initial_ms=100,
        ws_backoff_max_ms=1000,
        status_interval_s=1,
    )
    values.update(overrides)
    return handle.client_settings(settings).replace(**values)


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
