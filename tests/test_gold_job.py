"""The gold streaming job against a real Delta silver table, Delta gold and PostgreSQL."""

from __future__ import annotations

import logging
import random

import psycopg2.extras
import pytest

from cryptoflow.db import connect
from cryptoflow.services.postgres import reader_dsn
from pipelines.gold import job
from pipelines.gold.transform import METRIC_COLUMNS
from tests.gold_data import (
    MIDNIGHT_MS,
    SILVER_SCHEMA,
    append_silver,
    latencies,
    random_trades,
    trade,
)
from tests.metrics_oracle import compare_metrics, expected_metrics

pytestmark = pytest.mark.integration


def _pg_metrics(settings, symbols):
    conn = connect(reader_dsn(settings))
    with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT * FROM metrics WHERE symbol = ANY(%s) ORDER BY 1, 2, 3", (symbols,))
        rows = [dict(r) for r in cur.fetchall()]
    conn.close()
    return rows


def _pg_window(settings, symbol, start_ms):
    """The Postgres row of the short window of ``symbol`` starting at ``start_ms``, or None."""
    rows = [
        r
        for r in _pg_metrics(settings, [symbol])
        if r["window_start"].timestamp() * 1000 == start_ms
        and r["window_end"].second % 5 == 0
        and (r["window_end"] - r["window_start"]).total_seconds() == settings.window_seconds
    ]
    return rows[0] if rows else None


def _gold(spark, settings):
    return [
        r.asDict() for r in spark.read.format("delta").load(settings.table_path("gold")).collect()
    ]


def _only_metric_columns(rows):
    return [{c: r[c] for c in METRIC_COLUMNS} for r in rows]


def _check_exact(spark, s, symbols, trades, lat):
    """Delta gold and Postgres metrics both equal the oracle over ``trades``, no duplicates."""
    expected = expected_metrics(trades, s.window_seconds, latencies=lat)
    gold = _gold(spark, s)
    keys = [(r["symbol"], r["window_start"], r["window_end"]) for r in gold]
    assert len(keys) == len(set(keys)), "duplicate windows in Delta gold"
    assert compare_metrics(expected, gold) == []
    pg = _pg_metrics(s, symbols)
    assert compare_metrics(expected, pg) == []
    assert compare_metrics(_only_metric_columns(gold), pg) == []


def test_restart_resumes_and_a_late_trade_corrects_its_window(spark, settings, unique, caplog):
    s = settings.replace(
        lake_root=str(settings.data_dir / f"lake-{unique}"),
        checkpoint_root=str(settings.data_dir / f"checkpoints-{unique}"),
        window_seconds=5,
        watermark_seconds=10,
    )
    silver = s.table_path("silver")
    symbols = [f"G{unique.upper()}A", f"G{unique.upper()}B"]
    rng = random.Random(int(unique, 16))
    base = MIDNIGHT_MS - 90_000  # the data crosses midnight: two trade_date partitions
    batch1 = random_trades(rng, symbols, 150, base, 60_000)
    lat = latencies(batch1, rng)
    append_silver(spark, silver, batch1, lat)
    caplog.set_level(logging.INFO, logger="pipelines.gold.job")

    query = job.start(spark, s)
    try:
        query.processAllAvailable()
        _check_exact(spark, s, symbols, batch1, lat)
    finally:
        query.stop()
    before = _pg_window(s, symbols[0], base)

    # While gold is down: newer trades across midnight, and one trade 58 s behind the newest
    # one gold has seen, into a window Postgres already holds.
    late = trade(symbols[0], 10_000, "1.00000000", "7.00000000", base + 10, True)
    batch2 = random_trades(rng, symbols, 150, base + 60_000, 90_000, first_id=1000) + [late]
    lat |= latencies(batch2, rng)
    append_silver(spark, silver, batch2, lat)
    caplog.clear()
    query = job.start(spark, s)  # the same checkpoint: neither batch 1 again nor a gap
    try:
        query.processAllAvailable()
        _check_exact(spark, s, symbols, batch1 + batch2, lat)
        after = _pg_window(s, symbols[0], base)
        assert after["trade_count"] == (before["trade_count"] if before else 0) + 1
        batches = [m for m in caplog.messages if m.startswith("gold batch=")]
        assert len(batches) == 1 and "rows=151 " in batches[0], batches
        assert "late_rows=1 " in batches[0]  # the watermark resumed from gold
    finally:
        query.stop()


def test_starts_on_a_fresh_lake(spark, settings, unique):
    """Gold may start before silver ever ran: it creates the tables and waits for data."""
    s = settings.replace(
        lake_root=str(settings.data_dir / f"lake-{unique}"),
        checkpoint_root=str(settings.data_dir / f"checkpoints-{unique}"),
    )
    query = job.start(spark, s)
    try:
        query.processAllAvailable()
        assert query.isActive
        assert spark.read.format("delta").load(s.table_path("gold")).count() == 0
        assert [f.name for f in spark.read.format("delta").load(s.table_path("silver")).schema] == [
            f.name for f in SILVER_SCHEMA
        ]
    finally:
        query.stop()
