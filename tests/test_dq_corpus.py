"""The bad-input corpus of every stream kind through the real pipeline, in one drain:
Kafka (one topic per kind) -> bronze, silver of each kind, quarantine -> PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from pyspark.sql import functions as F

from cryptoflow.core.db import connect
from cryptoflow.core.services import kafka
from cryptoflow.core.services.postgres import admin_dsn
from cryptoflow.core.streams import KINDS, TRADE
from tests.dq_corpus import UNIQUE_RULE, Case, corpus, duplicate_of, valid

SUITES = Path(__file__).resolve().parents[1] / "expectations" / "suites"
NEW_KINDS = [k for k in KINDS.values() if k is not TRADE]
Position = tuple[str, int, int]  # topic, partition, offset


def suite_rules(suite: str) -> set[str]:
    doc = json.loads((SUITES / f"{suite}.json").read_text())
    return {e["meta"]["rule"] for e in doc["expectations"]}


def test_corpus_has_ten_bad_kinds_per_stream_kind_under_rules_of_its_suite():
    cases = corpus(["QAUSDT", "RBUSDT"], now_ms=1_767_225_600_000)
    for kind in KINDS.values():
        mine = [c for c in cases if c.kind == kind.name]
        rules = suite_rules(kind.entity.suite)
        expected = {c.expect for c in mine if c.expect}
        assert expected <= rules, f"{kind.name}: not rules of its suite: {expected - rules}"
        assert UNIQUE_RULE[kind.name] in rules
        assert len([c for c in mine if c.expect]) >= 10, kind.name
        assert len(expected) >= 10, f"{kind.name}: only {len(expected)} distinct rules"
        assert 1 <= len([c for c in mine if c.expect is None]) <= 3, kind.name
        assert len({c.name for c in mine}) == len(mine), f"{kind.name}: case names repeat"
    assert [c.name for c in cases if c.live] == ["open kline, x false (live: PostgreSQL only)"]


def produce(settings, cases: list[Case]) -> list[Position]:
    """Produce ``cases`` in order, each to its kind's topic; their Kafka positions."""
    p = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5,
                  "enable.idempotence": True, "message.max.bytes": 2_000_000})  # fmt: skip
    positions: list[Position | None] = [None] * len(cases)
    errors: list[str] = []

    def delivered(i: int):
        def cb(err, msg):
            if err is not None:
                errors.append(f"{cases[i].name}: {err}")
            else:
                positions[i] = (msg.topic(), msg.partition(), msg.offset())

        return cb

    for i, c in enumerate(cases):
        p.produce(settings.topic(KINDS[c.kind]), key=c.key, value=c.value, on_delivery=delivered(i),
                  headers=[("source", b"simulator"), ("connection", b"dq-corpus")])  # fmt: skip
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors
    assert all(pos is not None for pos in positions)
    return positions  # type: ignore[return-value]


def pg_rows(settings, query: str, params=()) -> list[tuple]:
    conn = connect(admin_dsn(settings))
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.mark.integration
def test_corpus_lands_in_quarantine_under_its_expectation(spark, settings, unique, tmp_path):
    from pipelines import job

    u = unique.upper()
    s = settings.replace(
        symbols=[f"Q{u}USDT", f"R{u}USDT"],
        streams=",".join(KINDS),
        kafka_topic_prefix=f"test.dq.{unique}",
        lake_root=str(tmp_path / "lake"),
        checkpoint_root=str(tmp_path / "checkpoints"),
    )
    for kind in KINDS.values():
        kafka.ensure_topic(s, s.topic(kind), partitions=2)
    now = int(time.time() * 1000)
    cases = corpus(s.symbols, first_id=1_000, now_ms=now)
    # Valid records around every bad frame, record numbers 1..N per kind and symbol; then a
    # second copy of each kind's first valid record, which is a duplicate.
    stream: list[Case] = []
    for kind in KINDS:
        mine = [c for c in cases if c.kind == kind]
        around = [valid(kind, sym, i, now) for i in range(1, len(mine) + 2) for sym in s.symbols]
        for i, c in enumerate(mine):
            stream += [around[2 * i], c, around[2 * i + 1]]
        stream += around[2 * len(mine) :]
    stream += [duplicate_of(next(c for c in stream if c.kind == k and c.name == "valid"))
               for k in KINDS]  # fmt: skip
    positions = produce(s, stream)
    at = dict(zip(positions, stream, strict=True))

    job.drain(spark, s)

    # Quarantine: Delta and its PostgreSQL mirror, one row per Kafka position.
    rows = (
        spark.read.format("delta")
        .load(s.table_path("quarantine"))
        .select("topic", "kafka_partition", "kafka_offset", "failed_expectations")
        .collect()
    )
    quarantined = {(r[0], r[1], r[2]): list(r[3]) for r in rows}
    assert len(quarantined) == len(rows), "a Kafka record quarantined twice in Delta"
    pg = pg_rows(s, "SELECT topic, kafka_partition, kafka_offset, failed_expectations "
                 "FROM quarantine WHERE topic = ANY(%s)", (s.topics,))  # fmt: skip
    assert {(r[0], r[1], r[2]): list(r[3]) for r in pg} == quarantined, "PostgreSQL mirror"
    assert len(pg) == len(rows)

    report, wrong = [], []
    for pos, c in at.items():
        if c.expect is None:
            continue
        names = quarantined.get(pos)
        report.append(f"{c.kind:10} {c.name:62} -> {', '.join(names or ['NOT QUARANTINED'])}")
        if names is None or c.expect not in names:
            wrong.append(f"{c.kind} {c.name!r}: expected {c.expect}, got {names}")
    print("\n".join(report))
    assert not wrong, "\n".join(wrong)

    for kind in KINDS.values():
        topic = s.topic(kind)
        mine = {pos: c for pos, c in at.items() if c.kind == kind.name}
        good = {pos for pos, c in mine.items() if c.expect is None and not c.live}
        live = {pos for pos, c in mine.items() if c.live}
        # Delta silver: exactly the valid final records, with their keys (and exact µs).
        columns = {col for c in mine.values() for col, _ in c.micros}
        silver = (
            spark.read.format("delta")
            .load(s.table_path(kind.entity.lake))
            .select(
                "symbol",
                F.expr(kind.entity.record_id).alias("record_id"),
                "kafka_partition",
                "kafka_offset",
                *[F.unix_micros(col).alias(col) for col in sorted(columns)],
            )
            .collect()
        )
        by_pos = {(topic, r.kafka_partition, r.kafka_offset): r for r in silver}
        assert len(by_pos) == len(silver), f"{kind.name}: a record twice in silver"
        assert set(by_pos) == good, f"{kind.name}: silver holds exactly the valid records"
        for pos in good:
            c, r = mine[pos], by_pos[pos]
            assert (r.symbol, r.record_id) == (c.symbol, c.record_id), f"{kind.name} {c.name}"
            for col, us in c.micros:
                assert r[col] == us, f"{kind.name} {c.name}: {col} {r[col]} != {us} µs"
        # Nothing lost: every record of the topic is in quarantine, silver or live, once.
        bad = {pos for pos in quarantined if pos[0] == topic}
        assert not bad & good and not bad & live
        assert bad | good | live == set(mine), f"{kind.name}: records lost or invented"
        assert len(bad) + len(good) + len(live) == len(mine)
        # PostgreSQL serving table: the valid records, final and live, and only those.
        closed = f", {kind.entity.final}" if kind.entity.final else ""
        query = f"SELECT kafka_partition, kafka_offset{closed} FROM {kind.entity.table}"
        served = pg_rows(s, query + " WHERE symbol = ANY(%s)", (s.symbols,))
        assert {(topic, r[0], r[1]) for r in served} == good | live, kind.entity.table
        assert len(served) == len(good | live)
        if kind.entity.final:
            flags = {(topic, r[0], r[1]): r[2] for r in served}
            assert all(flags[pos] is True for pos in good), kind.entity.table
            assert live and all(flags[pos] is False for pos in live), "open kline is live"
    dups = [pos for pos, c in at.items() if c.name.startswith("duplicate ")]
    assert len(dups) == len(KINDS)
    assert all(quarantined[pos] == [at[pos].expect] for pos in dups), "duplicates: unique only"


@pytest.mark.integration
def test_corpus_parses_and_validates_alike_interpreted_and_generated(spark, settings):
    """A small batch runs its projections interpreted (``pipelines.small_batches``): every
    column of every corpus record, verdicts included, equals the generated code's."""
    from pipelines.bronze.transform import to_bronze
    from pipelines.job import kind_plans, validated_records
    from pipelines.small_batches import run_as

    s = settings.replace(streams=",".join(KINDS))
    plans = kind_plans(s)
    now = int(time.time() * 1000)
    cases = corpus(["QAUSDT", "RBUSDT"], first_id=1_000, now_ms=now)
    cases += [valid(k, "QAUSDT", 1, now) for k in KINDS]
    records = [(c.key, c.value, s.topic(KINDS[c.kind]), 0, i, None, 0,
                [("source", b"simulator")]) for i, c in enumerate(cases)]  # fmt: skip
    schema = ("key binary, value binary, topic string, partition int, offset long, "
              "timestamp timestamp, timestampType int, "
              "headers array<struct<key:string,value:binary>>")  # fmt: skip
    kafka_rows = spark.createDataFrame(records, schema).withColumn(
        "timestamp", F.timestamp_millis(F.lit(now))
    )
    batch = validated_records(to_bronze(kafka_rows), s, plans).drop("spark_time")
    got = {}
    try:
        for small in (False, True):
            run_as(spark, small)
            got[small] = sorted(batch.collect(), key=lambda r: r.kafka_offset)
    finally:
        run_as(spark, False)
    assert len(got[True]) == len(cases)
    assert got[True] == got[False]
