"""The bad-input corpus through the real pipeline: Kafka -> (bronze, silver) -> quarantine."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from cryptoflow.core.db import connect
from cryptoflow.core.services import kafka
from cryptoflow.core.services.postgres import admin_dsn
from tests.conftest import wait_until
from tests.dq_corpus import Case, corpus, duplicate_of, payload, wrap

pytestmark = pytest.mark.integration


def produce(settings, cases: list[Case]) -> None:
    p = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5,
                  "message.max.bytes": 2_000_000})  # fmt: skip
    for c in cases:
        p.produce(settings.kafka_topic, key=c.key, value=c.value,
                  headers=[("source", b"simulator"), ("connection", b"dq-corpus")])  # fmt: skip
    assert p.flush(30) == 0


def test_corpus_lands_in_quarantine_under_its_expectation(spark, settings, unique, tmp_path):
    from pipelines import job

    u = unique.upper()
    s = settings.replace(
        symbols=[f"Q{u}USDT", f"R{u}USDT"],
        kafka_topic_prefix=f"test.dq.{unique}",
        lake_root=str(tmp_path / "lake"),
        checkpoint_root=str(tmp_path / "checkpoints"),
        trigger_interval_ms=200,
    )
    kafka.ensure_topic(s, partitions=2)
    now = int(time.time() * 1000)
    cases = corpus(s.symbols, first_id=1_000, now_ms=now)
    # Valid trades around every bad frame, ids 1..N per symbol.
    valid = [
        Case("valid", sym.encode(), wrap(payload(sym, i, now - 2_000 + i)), None, i, sym)
        for i in range(1, len(cases) + 2)
        for sym in s.symbols
    ]
    stream: list[Case] = []
    for i, c in enumerate(cases):
        stream += [valid[2 * i], c, valid[2 * i + 1]]
    stream += valid[2 * len(cases) :]
    bad = [c for c in cases if c.expect]
    passing = [c for c in cases if not c.expect] + valid
    produce(s, stream)
    # The duplicate arrives in a later batch than its original.
    dup = duplicate_of(valid[0])

    query = job.start(spark, s)
    silver = s.table_path("silver")
    quarantine = s.table_path("quarantine")

    def healthy(check):
        def run():
            assert query.exception() is None, f"{query.name} crashed: {query.exception()}"
            return check()

        return run

    def table_count(path):
        try:
            return spark.read.format("delta").load(path).count()
        except Exception:  # not created yet
            return 0

    try:
        wait_until(healthy(lambda: table_count(silver) >= len(passing)), 240, 0.5,
                   f"{len(passing)} valid trades in silver")  # fmt: skip
        produce(s, [dup])
        wait_until(healthy(lambda: table_count(quarantine) >= len(bad) + 1), 180, 0.5,
                   f"{len(bad) + 1} frames in quarantine")  # fmt: skip
        healthy(lambda: True)()
    finally:
        job.stop(query)

    rows = spark.read.format("delta").load(quarantine).collect()
    by_value: dict[bytes, list] = {}
    for r in rows:
        by_value.setdefault(bytes(r.raw_value), []).append(r)
    report = []
    for c in bad:
        got = by_value.get(c.value, [])
        assert len(got) == 1, f"{c.kind}: {len(got)} quarantine rows"
        names = list(got[0].failed_expectations)
        report.append(f"{c.kind:45} -> {', '.join(names)}")
        assert c.expect in names, f"{c.kind}: expected {c.expect}, got {names}"
    dup_rows = [r for r in by_value.get(dup.value, []) if "trade_unique" in r.failed_expectations]
    assert len(dup_rows) == 1, "the replayed trade must be quarantined once as trade_unique"
    assert len(rows) == len(bad) + 1, "nothing else was quarantined"
    print("\n".join(report))

    got = spark.read.format("delta").load(silver).select("symbol", "trade_id").collect()
    keys = sorted((r.symbol, r.trade_id) for r in got)
    assert keys == sorted((c.symbol, c.trade_id) for c in passing), "exactly the valid trades"

    # The Postgres mirror holds the same reasons.
    conn = connect(admin_dsn(s))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT failed_expectations FROM quarantine WHERE topic = %s", (s.kafka_topic,)
            )
            pg = cur.fetchall()
    finally:
        conn.close()
    assert len(pg) == len(rows)
    assert sum("price_positive" in r[0] for r in pg) == 2
