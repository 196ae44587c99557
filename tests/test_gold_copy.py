"""Delta copies of candles and reconciliation (pipelines/gold/copy.py): after each sync the
Delta tables hold exactly this lake's PostgreSQL rows, column for column; a restarted copier
resumes from the change_seq its last commit recorded."""

from __future__ import annotations

import json
from datetime import UTC

from delta.tables import DeltaTable

from pipelines.gold.copy import (
    CANDLE_SCHEMA,
    RECONCILIATION_SCHEMA,
    TableCopies,
    ensure_candle_tables,
)
from pipelines.gold.reconcile import kline_minutes, reconcile
from tests.candle_oracle import COLUMNS, expected_candles
from tests.gold_data import trade
from tests.gold_pg import fold_cur, in_tx, kline, rows, upsert_klines

HOUR_MS = 1_767_225_600_000


def _pg(s, lake):
    candles = rows(s, "SELECT * FROM candles WHERE lake = %s", (lake,))
    recs = rows(s, "SELECT * FROM reconciliation WHERE lake = %s", (lake,))
    return (
        sorted(tuple(r[c] for c in COLUMNS) for r in candles),
        sorted((r["symbol"], r["minute"], r["status"], r["differences"], r["checked_at"])
               for r in recs),
    )  # fmt: skip


def _delta(spark, s):
    candles = [
        r.asDict() for r in spark.read.format("delta").load(s.table_path("candles")).collect()
    ]
    for c in candles:
        assert c["open_date"] == c["open_time"].astimezone(UTC).date()
    recs = spark.read.format("delta").load(s.table_path("reconciliation")).collect()
    utc = lambda t: t.astimezone(UTC)  # noqa: E731 - collect gives naive local times
    return (
        sorted(tuple(utc(c[k]) if k.endswith("_time") else c[k] for k in COLUMNS) for c in candles),
        sorted((r.symbol, utc(r.minute), r.status, json.loads(r.differences), utc(r.checked_at))
               for r in recs),
    )  # fmt: skip


def test_candles_and_reconciliation_are_copied_to_delta(spark, settings, unique, tmp_path):
    s = settings.replace(lake_root=str(tmp_path / "lake"))
    lake = s.table_path("gold")
    sym = f"D{unique.upper()}USDT"
    ensure_candle_tables(spark, s)
    for path, schema, part in ((s.table_path("candles"), CANDLE_SCHEMA, "open_date"),
                               (s.table_path("reconciliation"), RECONCILIATION_SCHEMA,
                                "minute_date")):  # fmt: skip
        assert spark.read.format("delta").load(path).schema.fieldNames() == schema.fieldNames()
        assert DeltaTable.forPath(spark, path).detail().first().partitionColumns == [part]
    trades = [trade(sym, i, f"{100 + i}.12345678", "0.33333333", HOUR_MS + i * 7_000, i % 2 == 0)
              for i in range(1, 20)]  # fmt: skip
    (m0, m1, m2) = expected_candles(trades, [("1m", 60)])
    klines = [kline(m0), kline(m1, high=m1["high"] + 1)]

    def batch(cur, ts, ks):
        upsert_klines(cur, ks)
        folded = fold_cur(cur, lake, ts)
        reconcile(cur, lake, folded.minutes + kline_minutes(ks), 10)

    in_tx(s, lambda cur: batch(cur, trades, klines))
    copier = TableCopies(spark, s, 60)
    copied = copier.sync()
    assert copied == {"candles": len(expected_candles(trades)), "reconciliation": 2}
    assert _delta(spark, s) == _pg(s, lake)
    assert copier.sync() == {"candles": 0, "reconciliation": 0}

    late = trade(sym, 0, "1.00000000", "5.00000000", HOUR_MS + 1, False)  # minute 0: mismatch
    in_tx(s, lambda cur: batch(cur, [late], []))
    restarted = TableCopies(spark, s, 60)  # resumes from the last commit's change_seq
    assert restarted.sync() == {"candles": 4, "reconciliation": 1}
    pg = _pg(s, lake)
    assert _delta(spark, s) == pg
    assert [r[2] for r in pg[1]] == ["mismatch", "mismatch"]
    restarted.start()
    restarted.stop()  # the final round: nothing left
    assert _delta(spark, s) == pg
