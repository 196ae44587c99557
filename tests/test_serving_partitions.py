"""raw_trades and metrics partitioned by day (sql/090_day_partitions.sql) against the real
PostgreSQL and Spark: the batch makes the days it needs (an old CSV day included), a replayed
batch changes nothing, retention drops only old days, and the lake refills a dropped day.

The session's database is shared: the rows are this test's own symbols, on days of 2019 no
other test uses, and only this test's days are ever dropped."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest

from cryptoflow.core.db import apply_migrations, connect
from cryptoflow.core.services.postgres import admin_dsn, pipeline_dsn
from cryptoflow.core.streams import TRADE
from pipelines.gold.transform import METRIC_COLUMNS
from pipelines.ops.maintain import maintain_serving
from pipelines.ops.refill import refill_days
from pipelines.ops.retention import day_partitions, drop_partitions, expired
from pipelines.serve import Gold, serve_batch
from pipelines.silver.tables import RAW_TRADES, SILVER_SCHEMA, ensure_silver_table
from tests.gold_data import random_trades
from tests.gold_pg import trade_row

pytestmark = pytest.mark.integration
LENGTHS = (5, 60)
DAYS = [date(2019, 3, 1), date(2019, 3, 2)]


def pg(settings, query: str, params=()) -> list[tuple]:
    conn = connect(admin_dsn(settings))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


def trades_on(days: list[date], symbols: list[str], per_day: int, seed: int) -> list[tuple]:
    """raw_trades rows spread over ``days`` (ids growing with time, as the exchange's)."""
    rng, out, first = random.Random(seed), [], 1
    for day in days:
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        payloads = random_trades(rng, symbols, per_day, start, 86_400_000, first)
        out += [trade_row(t) for t in sorted(payloads, key=lambda t: (t["s"], t["t"]))]
        first += per_day
    return out


def arrow(rows: list[tuple]) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(RAW_TRADES.columns, r, strict=True)) for r in rows])


def silver_row(row: tuple) -> tuple:
    """A raw_trades row as silver holds it: exact decimals, then its trade_date."""
    values = dict(zip(RAW_TRADES.columns, row, strict=True))
    values["price"], values["quantity"] = Decimal(values["price"]), Decimal(values["quantity"])
    return (*values.values(), values["trade_time"].date())


def raw_trades(settings, symbols: list[str]) -> list[tuple]:
    cols = ", ".join(RAW_TRADES.columns)
    return pg(settings, f"SELECT {cols} FROM raw_trades WHERE symbol = ANY(%s) ORDER BY 1, 2",
              (symbols,))  # fmt: skip


def metrics(settings, symbols: list[str]) -> list[tuple]:
    cols = ", ".join(METRIC_COLUMNS)  # mirrored_at aside: when a row was written
    return pg(settings, f"SELECT {cols} FROM metrics WHERE symbol = ANY(%s) ORDER BY 1, 2, 3",
              (symbols,))  # fmt: skip


def serve(settings, lake: str, query: str, batch: int, rows: list[tuple]):
    gold = Gold(lake, LENGTHS)
    return serve_batch(pipeline_dsn(settings), query, batch, arrow(rows), [], gold, 10)


def test_tables_are_partitioned_by_day_and_the_migration_is_idempotent(settings):
    kinds = dict(pg(settings, "SELECT relname, relkind::text FROM pg_class "
                              "WHERE relname IN ('raw_trades', 'metrics')"))  # fmt: skip
    assert kinds == {"raw_trades": "p", "metrics": "p"}
    today = datetime.now(UTC).date()
    for table in ("raw_trades", "metrics"):
        days = {p.day for p in day_partitions(admin_dsn(settings), table)}
        assert today in days and today + timedelta(days=1) in days  # made ahead
    assert apply_migrations(admin_dsn(settings)) == []  # already at the new shape


def test_any_day_goes_in_once_and_a_replayed_batch_changes_nothing(settings, unique):
    symbols = [f"P{unique}A", f"P{unique}B", f"P{unique}C"]
    lake = f"lake-partitions-{unique}"
    now = datetime.now(UTC).replace(microsecond=0)
    rows = trades_on([date(2025, 1, 1)], symbols, 300, 1)  # a CSV replay's old day...
    rows += [trade_row({"s": symbols[0], "t": 10_000 + i, "p": "1.5", "q": "2", "m": i % 2 == 0,
                        "E": int(now.timestamp() * 1000) + i, "T": int(now.timestamp() * 1000)
                        + i}) for i in range(5)]  # ...and today  # fmt: skip
    first = serve(settings, lake, f"q-{unique}", 0, rows)
    assert first.trades == len(rows)
    before_trades, before_metrics = raw_trades(settings, symbols), metrics(settings, symbols)
    assert len(before_trades) == len(rows) and before_metrics
    where = pg(settings, "SELECT DISTINCT tableoid::regclass::text FROM raw_trades "
                         "WHERE symbol = ANY(%s)", (symbols,))  # fmt: skip
    assert {w[0] for w in where} == {"raw_trades_p20250101", f"raw_trades_p{now:%Y%m%d}"}

    # The same trades again, as a new batch (a replay the ledger cannot recognise: another
    # query): nothing is inserted twice, no window counts a trade twice.
    again = serve(settings, lake, f"q2-{unique}", 0, rows)
    assert again.trades == 0 and not again.windows
    assert raw_trades(settings, symbols) == before_trades
    assert metrics(settings, symbols) == before_metrics
    counted = pg(
        settings,
        "SELECT sum(trade_count) FROM metrics WHERE symbol = ANY(%s) "
        "AND window_end - window_start = interval '5 seconds'",
        (symbols,),
    )
    assert counted == [(len(rows),)]  # fmt: skip


def test_retention_drops_only_old_days(settings, unique):
    symbols = [f"R{unique}"]
    lake = f"lake-retention-{unique}"
    today = datetime.now(UTC).date()
    serve(settings, lake, f"q-{unique}", 0, trades_on([date(2019, 2, 1)], symbols, 50, 2))
    dsn = admin_dsn(settings)
    old = [p for p in day_partitions(dsn, "raw_trades") if p.day == date(2019, 2, 1)]
    recent = [p for p in day_partitions(dsn, "raw_trades") if p.day == today]
    assert len(old) == 1 and len(recent) == 1
    assert expired(old + recent, 30, today) == old
    assert expired(old + recent, 0, today) == []  # 0: keep every day
    # what maintain would drop (a dry run: the shared database keeps other tests' days)
    doomed = maintain_serving(dataclasses.replace(settings, serving_retention_days=30), True)
    assert old[0] in doomed and not any(p.day >= today - timedelta(days=30) for p in doomed)
    assert maintain_serving(settings, True) == []  # default retention: keep all
    drop_partitions(dsn, [p for p in doomed if p.name == old[0].name], "test")
    assert raw_trades(settings, symbols) == []
    assert today in {p.day for p in day_partitions(dsn, "raw_trades")}


def test_replay_refills_a_dropped_day(spark, settings, unique, tmp_path):
    s = dataclasses.replace(settings, lake_root=str(tmp_path / "lake"))
    symbols = [f"F{unique}A", f"F{unique}B", f"F{unique}C"]
    rows = trades_on(DAYS, symbols, 400, 3)
    serve(s, s.table_path("gold"), f"q-{unique}", 0, rows)
    silver = [silver_row(r) for r in rows]
    ensure_silver_table(spark, TRADE, s.table_path("silver"))
    spark.createDataFrame(silver, SILVER_SCHEMA).write.format("delta").mode("append").save(
        s.table_path("silver")
    )
    trades, windows = raw_trades(s, symbols), metrics(s, symbols)
    dsn = admin_dsn(s)
    dropped = [
        p for t in ("raw_trades", "metrics") for p in day_partitions(dsn, t) if p.day == DAYS[0]
    ]
    drop_partitions(dsn, dropped, "test")
    kept = [r for r in trades if r[RAW_TRADES.columns.index("trade_time")].date() != DAYS[0]]
    assert raw_trades(s, symbols) == kept and len(metrics(s, symbols)) < len(windows)

    result = refill_days(spark, s, DAYS[0], DAYS[0])
    assert result.trades_inserted == len(trades) - len(kept) == result.silver_rows
    assert raw_trades(s, symbols) == trades
    assert metrics(s, symbols) == windows
    again = refill_days(spark, s, DAYS[1], DAYS[1])  # a day still there: nothing changes
    assert again.trades_inserted == 0 and raw_trades(s, symbols) == trades


def test_latest_rows_functions_answer_as_the_unbounded_queries(settings, unique):
    """sql/091_latest_rows.sql: the functions read the last day's partitions only, yet answer
    as the unbounded queries they replace, also when the newest rows are older than a day
    (they go on into the older days) and when the last day holds fewer than n rows."""
    a, b = f"L{unique}A", f"L{unique}B"
    lake = f"lake-latest-{unique}"
    serve(settings, lake, f"q-{unique}", 0, trades_on([date(2019, 6, 1), date(2019, 6, 2)],
                                                       [a, b], 40, 4))  # fmt: skip

    def trade_times(symbols, n):
        return pg(settings, "SELECT trade_time FROM raw_trades WHERE symbol = ANY(%s) "
                            "ORDER BY trade_time DESC LIMIT %s", (symbols, n))  # fmt: skip

    def window_starts(symbols, n):
        return pg(settings, "SELECT window_start FROM metrics WHERE symbol = ANY(%s) "
                            "ORDER BY window_start DESC LIMIT %s", (symbols, n))  # fmt: skip

    def newest(symbols):
        return pg(settings, "SELECT (SELECT max(trade_time) FROM raw_trades WHERE symbol = "
                            "ANY(%(s)s)), (SELECT max(window_start) FROM metrics WHERE symbol "
                            "= ANY(%(s)s)), (SELECT max(window_end) FROM metrics WHERE symbol "
                            "= ANY(%(s)s))", {"s": symbols})  # fmt: skip

    def check(symbols, n):
        assert pg(settings, "SELECT trade_time FROM latest_trades(%s, %s)", (n, symbols)) == (
            trade_times(symbols, n)
        )
        assert pg(settings, "SELECT window_start FROM latest_metrics(%s, %s)", (n, symbols)) == (
            window_starts(symbols, n)
        )
        got = pg(settings, "SELECT newest_trade_time(%(s)s), newest_window_start(%(s)s), "
                           "newest_window_end(%(s)s)", {"s": symbols})  # fmt: skip
        assert got == newest(symbols)

    # Only 2019: nothing in the last day, every function goes on into the older days.
    assert len(trade_times([a, b], 5)) == 5
    check([a, b], 5)
    check([b], 3)
    # A few trades of `a` an hour ago: 3 in the last day, the other 2 of 5 from 2019.
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    ms = int(now.timestamp() * 1000)
    serve(settings, lake, f"q-{unique}", 1, [trade_row({
        "s": a, "t": 1_000_000 + i, "p": "2.5", "q": "1", "m": i % 2 == 0, "E": ms + i,
        "T": ms + i}) for i in range(3)])  # fmt: skip
    for n in (2, 3, 5, 100):
        check([a, b], n)
    check([b], 5)  # b has nothing recent: still its 2019 rows
    check([f"L{unique}X"], 5)  # no such symbol: no rows, NULL
    assert pg(settings, "SELECT count(*) FROM latest_trades(0, %s)", ([a],)) == [(0,)]
    # Every symbol, in one snapshot (other tests write meanwhile).
    conn = connect(admin_dsn(settings))
    try:
        conn.set_session(isolation_level="REPEATABLE READ")
        with conn.cursor() as cur:
            cur.execute("SELECT trade_time FROM latest_trades(5)")
            got = cur.fetchall()
            cur.execute("SELECT trade_time FROM raw_trades ORDER BY trade_time DESC LIMIT 5")
            assert got == cur.fetchall()
            cur.execute("SELECT newest_trade_time(), newest_window_end()")
            got = cur.fetchall()
            cur.execute("SELECT max(trade_time), (SELECT max(window_end) FROM metrics) "
                        "FROM raw_trades")  # fmt: skip
            assert got == cur.fetchall()
            # Grafana's pickers list what has windows in the day before the newest window:
            # a, not b (2019 only).
            cur.execute("SELECT symbol FROM metrics_symbols()")
            listed = [r[0] for r in cur.fetchall()]
            assert a in listed and b not in listed
            cur.execute("SELECT seconds FROM metrics_window_seconds()")
            assert {5, 60} <= {r[0] for r in cur.fetchall()}
        conn.rollback()
    finally:
        conn.close()
