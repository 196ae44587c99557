"""Ingestion against the simulator and the real broker: faults, outages, crashes, malformed;
every stream kind to its own topic."""

from __future__ import annotations

import collections
import json
import logging
import time

import pytest

from cryptoflow.core.services import kafka
from cryptoflow.core.streams import AGG_TRADE, KINDS, KLINE_1M, MICROS_FROM, TRADE
from ingestion.backfill import gaps_topic
from ingestion.exchange_frames import kline_frame
from ingestion.frames import classify
from ingestion.producer import FrameProducer
from ingestion.resume import murmur2_partition
from ingestion.simulator.options import SimulatorOptions
from ingestion.simulator.runner import run_simulator_in_thread
from ingestion.status import IngestStats
from tests.conftest import free_port, wait_until
from tests.ingest_helpers import (
    client,
    ingesting,
    kind_ids,
    read_topic,
    read_topics,
    recorded_ids,
    rest_agg_ids,
    seed_resume_point,
    trade_ids,
)

pytestmark = pytest.mark.integration


def live_frames(ing) -> int:
    return ing.stats.frames


def recorded_upto(record, last_ids: dict[str, int]) -> set[tuple[str, int]]:
    """Recorded trades up to the last id ingestion saw per symbol (the simulator runs on)."""
    return {(sym, t) for sym, t in recorded_ids(record) if t <= last_ids[sym]}


def test_drops_skips_and_shutdown_lose_nothing(settings, unique, tmp_path):
    record = tmp_path / "record.jsonl"
    opts = SimulatorOptions(  # runs until stopped, whatever the machine's load
        port=0,
        seed=7,
        rate=150,
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
            wait_until(lambda: live_frames(ing) > 200, 60, what="some live frames")
            sim.announce_shutdown()
            wait_until(
                lambda: ing.stats.reconnects >= 4 and live_frames(ing) > 700,
                90,
                what="several drops",
            )
        stats = ing.finish()  # fills the gaps found so far, flushes
        sim_stats = sim.stats()
        want = recorded_upto(record, stats.last_trade_id)

    topics = read_topics(s)  # every kind streams meanwhile, each into its own topic
    records = topics[s.kafka_topic]
    got = [k for k in trade_ids(records) if k not in seeded]
    assert set(got) == want
    assert sim_stats["trades_skipped"] > 0 and sim_stats["connections_dropped"] > 0
    trades = stats.kind("trade")
    assert trades.ids_filled >= sim_stats["trades_skipped"]
    assert stats.ids_unfillable == 0
    # duplicates: exactly the counted ones, each delivered by two different connections
    counts = collections.Counter(got)
    assert sum(n - 1 for n in counts.values()) == trades.duplicates
    by_conn = collections.defaultdict(set)
    for r in records:
        t = r.trade()
        if t is not None:
            by_conn[(t["s"], t["t"])].add(r.headers["connection"])
    assert all(len(by_conn[k]) == n for k, n in counts.items() if n > 1)
    # malformed frames are in Kafka, flagged and counted
    flagged = [r for recs in topics.values() for r in recs if r.invalid]
    assert stats.invalid == len(flagged) > 0
    reasons = collections.Counter(r.invalid.split(":")[0] for r in records if r.invalid)
    assert set(reasons) <= {"invalid JSON", "not a trade", "missing field t"}, reasons
    assert {r.headers["source"] for r in records} == {b"simulator", b"backfill"}
    assert all(r.partition == murmur2_partition(r.key, 3) for r in records)


def test_malformed_frames_are_flagged_and_pings_answered(settings, unique, tmp_path):
    record = tmp_path / "record.jsonl"
    opts = SimulatorOptions(  # pings every 0.5 s; no pong within 2 s would drop the client
        port=0,
        seed=3,
        rate=100,
        record=record,
        malformed_every=5,
        ping_interval=0.5,
        pong_timeout=2.0,
    )
    with run_simulator_in_thread(settings, opts) as sim:
        # trades alone: one malformed frame follows every 5th trade streamed
        s = client(sim, settings, unique, gap_probe_idle_s=2, streams="trade")
        seeded = seed_resume_point(sim, s)
        with ingesting(s) as ing:
            wait_until(lambda: live_frames(ing) > 400, 60, what="live frames for 4+ s")
        stats = ing.finish()
        sim_stats = sim.stats()
        want = recorded_upto(record, stats.last_trade_id)
    records = read_topic(s, s.kafka_topic)
    assert {k for k in trade_ids(records) if k not in seeded} == want
    flagged = [r for r in records if r.invalid]
    live = [r for r in records if r.headers["source"] == b"simulator" and not r.invalid]
    # one malformed frame follows every 5th streamed trade; all of those we were sent arrived
    assert len(flagged) == stats.invalid > 10
    assert abs(len(flagged) - len(live) // 5) <= 1, (len(flagged), len(live))
    assert {r.invalid for r in flagged} == {
        "invalid JSON",
        "not a trade: e=simulatorNoise",
        "missing field t",
    }
    assert {r.key for r in flagged} <= set(k.encode() for k in s.symbols)
    assert all(r.headers["source"] == b"simulator" for r in flagged)
    # the client kept running on one connection: no reconnect, no pong timeout
    assert stats.reconnects == 0 and sim_stats["connections_total"] == 1
    assert sim_stats["message_limit_disconnects"] == 0  # pongs + pings stay under 5/s


def test_rotation_overlaps_connections_and_counts_duplicates(settings, unique, tmp_path):
    record = tmp_path / "record.jsonl"
    opts = SimulatorOptions(port=0, seed=4, rate=120, record=record)
    with run_simulator_in_thread(settings, opts) as sim:
        s = client(
            sim, settings, unique, ws_rotate_after_s=1, ws_rotate_overlap_s=1, gap_probe_idle_s=2
        )
        seeded = seed_resume_point(sim, s)
        with ingesting(s) as ing:
            wait_until(
                lambda: ing.stats.reconnects >= 3 and ing.stats.duplicates > 0,
                60,
                what="overlapping rotations",
            )
        stats = ing.finish()
        sim_stats = sim.stats()
        want = recorded_upto(record, stats.last_trade_id)
    got = [k for k in trade_ids(read_topic(s, s.kafka_topic)) if k not in seeded]
    assert set(got) == want
    assert stats.reconnects >= 2 and sim_stats["connections_total"] >= 3
    assert len(got) - len(set(got)) == stats.kind("trade").duplicates > 0  # the overlaps'
    assert stats.duplicates >= stats.kind("trade").duplicates  # other kinds' overlaps too


def test_stalled_connection_is_replaced(settings, unique):
    opts = SimulatorOptions(port=0, seed=5, rate=0.2)  # one trade per 5 s: a stall at 1 s
    with run_simulator_in_thread(settings, opts) as sim:
        s = client(sim, settings, unique, ws_stall_timeout_s=1)
        with ingesting(s) as ing:
            wait_until(lambda: ing.stats.reconnects >= 2, 30, what="stall reconnects")
        ing.finish()
        assert sim.stats()["connections_total"] >= 2


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_unreachable_exchange_is_reported_and_retried(settings, unique):
    port = free_port()  # nothing listens here
    s = settings.replace(
        source="binance",
        kafka_topic_prefix=f"ingest-down-{unique}",
        binance_ws_url=f"ws://127.0.0.1:{port}",
        binance_rest_url=f"http://127.0.0.1:{port}",
        ws_backoff_initial_ms=100,
        ws_backoff_max_ms=400,
    )
    lines = _Lines()
    logger = logging.getLogger("ingestion.connection")
    logger.addHandler(lines)
    try:
        with ingesting(s) as ing:
            wait_until(lambda: ing.stats.reconnects >= 3, 30, what="retries")
            assert ing.thread.is_alive()
        stats = ing.finish()
    finally:
        logger.removeHandler(lines)
    assert stats.frames == 0
    failures = [m for m in lines.lines if "cannot connect" in m]
    assert len(failures) >= 3
    assert f"ws://127.0.0.1:{port}/stream?streams=" in failures[0]
    assert "reconnecting in" in failures[0] and "(attempt 1)" in failures[0]


def test_every_kind_to_its_topic_in_microseconds_gaps_filled_or_counted(settings, unique, tmp_path):
    """All four streams of three symbols on one connection that the simulator drops, with
    records of every kind held back and malformed frames: each frame lands in its kind's
    topic; trades and aggregate trades lose nothing (REST fills, in µs like the stream); book
    ticker gaps are counted and recorded; times are in µs (timeUnit=MICROSECOND)."""
    record = tmp_path / "record.jsonl"
    opts = SimulatorOptions(port=0, seed=9, rate=150, record=record, drop_every=2.0,
                            skip_ids=3, skip_every=80, malformed_every=60)  # fmt: skip
    with run_simulator_in_thread(settings, opts) as sim:
        s = client(sim, settings, unique, binance_time_unit="MICROSECOND", gap_probe_idle_s=2)
        assert s.stream_kinds == list(KINDS.values())
        seeded = seed_resume_point(sim, s)
        with ingesting(s) as ing:
            wait_until(
                lambda: (
                    ing.stats.reconnects >= 3
                    and ing.counts("aggTrade").ids_filled > 0
                    and ing.counts("bookTicker").gaps_counted > 0
                    and ing.counts("kline_1m").frames > 0
                ),
                120,
                what="drops, filled aggTrade gaps, counted bookTicker gaps, klines",
            )
        stats = ing.finish()
        want = recorded_upto(record, stats.last_trade_id)
        topics = read_topics(s)
        aggs = kind_ids(topics[s.topic(AGG_TRADE)], AGG_TRADE)
        agg_want = set()
        for sym, last in stats.last_ids["aggTrade"].items():
            first = min(a for x, a in aggs if x == sym)
            agg_want |= {(sym, a) for a in rest_agg_ids(sim, sym, first, last)}
        gap_records = [json.loads(r.value) for r in read_topic(s, gaps_topic(s))]

    assert {k for k in trade_ids(topics[s.kafka_topic]) if k not in seeded} == want
    assert set(aggs) == agg_want
    agg = stats.kind("aggTrade")
    assert agg.ids_filled > 0 and agg.ids_unfillable == 0
    assert len(aggs) - len(set(aggs)) == agg.duplicates
    for kind in s.stream_kinds:  # each topic holds its kind's frames, keyed by symbol
        records = topics[s.topic(kind)]
        valid = [r for r in records if not r.invalid]
        assert valid and all(classify(r.value).kind is kind for r in valid), kind.name
        assert {r.key for r in valid} == {x.encode() for x in s.symbols}
        assert stats.kind(kind.name).frames >= len([r for r in valid if r.headers["source"]
                                                    == b"simulator"])  # fmt: skip
    assert stats.invalid == sum(1 for recs in topics.values() for r in recs if r.invalid) > 0
    # microseconds everywhere, backfilled frames included
    for kind in (TRADE, AGG_TRADE):
        payloads = [
            (r.headers["source"], json.loads(r.value)["data"])
            for r in topics[s.topic(kind)]
            if not r.invalid and r.headers["connection"] != b"seed"
        ]
        assert {src for src, _ in payloads} == {b"simulator", b"backfill"}, kind.name
        assert all(p["T"] >= MICROS_FROM and p["E"] >= MICROS_FROM for _, p in payloads)
    # gap outcomes: fills per kind, book ticker gaps counted only
    filled = collections.Counter(g["kind"] for g in gap_records if not g.get("counted_only"))
    assert filled["trade"] > 0 and filled["aggTrade"] > 0 and "bookTicker" not in filled
    counted = [g for g in gap_records if g.get("counted_only")]
    assert {g["kind"] for g in counted} == {"bookTicker"}
    assert sum(g["gaps"] for g in counted) == stats.kind("bookTicker").gaps_counted
    assert sum(g["missing"] for g in counted) == stats.kind("bookTicker").ids_skipped


def test_closed_klines_resume_and_missed_minutes_are_filled_or_recorded(settings, unique):
    """Resume from a closed kline two minutes before the simulator's first closed one: when
    that one arrives (on the stream, or found by the probe), the minute between is a gap of
    one 60 000 ms step, filled from REST klines if the simulator has it, recorded otherwise."""
    opts = SimulatorOptions(port=0, seed=12, rate=40)
    # two minutes before the one in progress when the simulator starts: it has no trades then
    seed = int(time.time() * 1000) // 60_000 * 60_000 - 120_000
    with run_simulator_in_thread(settings, opts) as sim:
        s = client(sim, settings, unique, streams="kline_1m", gap_probe_idle_s=2)
        kafka.ensure_topics(s)
        row = [seed, "1", "1", "1", "1", "0", seed + 59_999, "0", 0, "0", "0", "0"]
        producer, headers = FrameProducer(s, IngestStats()), [("source", b"simulator")]
        for symbol in s.symbols:
            frame, now = kline_frame(symbol, row), int(time.time() * 1000)
            producer.produce_blocking(s.topic(KLINE_1M), symbol.encode(), frame, now, headers)
        assert producer.flush(30) == 0
        with ingesting(s) as ing:
            wait_until(
                lambda: ing.counts("kline_1m").gaps_found >= 3 and ing.stats.gaps_open == 0,
                150,
                what="the first closed kline of every symbol and its gap handled",
            )
        stats = ing.finish()
    klines = kind_ids(read_topic(s, s.topic(KLINE_1M)), KLINE_1M)
    outcomes = [g for g in map(json.loads, (r.value for r in read_topic(s, gaps_topic(s))))
                if g["kind"] == "kline_1m"]  # fmt: skip
    assert {g["symbol"] for g in outcomes} == set(s.symbols)
    for symbol in s.symbols:
        (gap,) = [g for g in outcomes if g["symbol"] == symbol]
        assert (gap["first_id"], gap["step"]) == (seed + 60_000, 60_000)
        assert gap["filled"] + gap["unfillable"] == gap["missing"] >= 1
        closed = {t for sym, t in klines if sym == symbol}
        lost = {t for a, b in gap["unfillable_ranges"] for t in range(a, b + 1, 60_000)}
        assert not closed & lost
        assert set(range(seed + 60_000, gap["last_id"] + 60_000, 60_000)) <= closed | lost
    assert stats.kind("kline_1m").ids_filled + stats.kind("kline_1m").ids_unfillable == sum(
        g["missing"] for g in outcomes
    )
