"""One micro-batch's PostgreSQL transaction: every kind's rows, quarantine, gold and the ledger.

In one transaction (retried while PostgreSQL is unreachable, ``pipelines.serving``):
1. the ledger: if ``applied_batches`` holds (query, batch, part), the batch (or that
   partition of it) was applied before a crash and nothing is done again;
2. the batch's new trades are staged and inserted into ``raw_trades``, and exactly the rows
   inserted are folded into the windows' sums, ``metrics`` and ``candles``
   (``pipelines.gold.fold``);
3. the other stream kinds' rows are upserted into their serving tables (``UpsertSpec``);
4. the minutes the batch touched are reconciled with the exchange's klines, and the
   aggregates with their trades (``pipelines.gold.reconcile``, ``pipelines.gold.aggcheck``);
5. the rejected records are upserted into ``quarantine`` (first write of a key wins);
6. the ledger row.
A reader therefore never sees a window whose trades are not in raw_trades, nor the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2.extensions
import pyarrow as pa

from cryptoflow.core.streams import AGG_TRADE, KLINE_1M
from pipelines.gold.aggcheck import check_aggregates
from pipelines.gold.candles import CandleInterval
from pipelines.gold.fold import Folded, fold_batch
from pipelines.gold.reconcile import kline_minutes, reconcile
from pipelines.serving import Rows, UpsertSpec, copy_upsert, in_transaction, stage_rows
from pipelines.silver.tables import QUARANTINE, RAW_TRADES

#: Advisory lock key under which a batch's partitions take change_seq numbers in turn.
CHANGE_SEQ_LOCK = 0x63665F73  # "cf_s"


@dataclass(frozen=True)
class Gold:
    """What a batch's transaction folds and checks besides serving rows: the ``lake`` the
    windows belong to, the metric window ``lengths``, the candle ``intervals``, and whether
    to ``reconcile`` candles with the exchange's klines and aggregates with their trades
    (when those streams are chosen), with the ``watermark_seconds`` that makes a minute
    final."""

    lake: str
    lengths: Sequence[int]
    intervals: Sequence[CandleInterval] = ()
    reconcile_klines: bool = False
    check_aggregates: bool = False
    watermark_seconds: int = 10


@dataclass(frozen=True)
class Served:
    """What a batch's transaction did (``replayed``: the ledger had it, nothing was done)."""

    trades: int = 0
    quarantined: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows changed per other serving table
    windows: list[dict[str, Any]] = field(default_factory=list)
    reconciled: dict[str, int] = field(default_factory=dict)  # minutes per status
    replayed: bool = False


def serve_batch(
    dsn: str,
    query_id: str,
    batch_id: int,
    trades: Rows,
    quarantined: Sequence[Sequence[Any]],
    gold: Gold,
    retry_seconds: float,
    others: Sequence[tuple[UpsertSpec, Rows]] = (),
    part: int = 0,
) -> Served:
    """Apply one batch (``part``: one partition of it, written by an executor task) to the
    serving tables exactly once (module doc)."""

    def apply(cur: psycopg2.extensions.cursor) -> Served:
        cur.execute(
            "SELECT 1 FROM applied_batches WHERE query_id = %s AND batch_id = %s AND part = %s",
            (query_id, batch_id, part),
        )
        if cur.fetchone() is not None:
            return Served(replayed=True)
        # The Delta copiers take rows by change_seq (pipelines.gold.sync): the batch's
        # partitions write side by side, so each takes its sequence numbers and commits in
        # turn, and no copier round can see a later number committed before an earlier one.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_SEQ_LOCK,))
        folded = Folded()
        if len(trades):
            stage = stage_rows(cur, RAW_TRADES, trades)
            folded = fold_batch(
                cur, RAW_TRADES.columns, stage, gold.lake, gold.lengths, gold.intervals
            )
        rows = {spec.table: copy_upsert(cur, spec, r) for spec, r in others if len(r)}
        by_table = {spec.table: r for spec, r in others}
        reconciled: dict[str, int] = {}
        if gold.reconcile_klines:
            klines = by_table.get(KLINE_1M.entity.table)
            minutes = folded.minutes + (kline_minutes(klines) if klines is not None else [])
            reconciled = dict(reconcile(cur, gold.lake, minutes, gold.watermark_seconds))
        if gold.check_aggregates:
            aggs = by_table.get(AGG_TRADE.entity.table)
            keys = _keys(aggs, ("symbol", "agg_trade_id")) if aggs is not None else []
            checked = check_aggregates(cur, keys, folded.trade_ranges)
            if checked["mismatch"]:
                reconciled["aggregate_mismatch"] = checked["mismatch"]
        rejected = copy_upsert(cur, QUARANTINE, quarantined) if quarantined else 0
        cur.execute(
            "INSERT INTO applied_batches (query_id, batch_id, part, trades, quarantined) "
            "VALUES (%s, %s, %s, %s, %s)",
            (query_id, batch_id, part, folded.trades, rejected),
        )
        return Served(folded.trades, rejected, rows, folded.windows, reconciled)

    return in_transaction(dsn, apply, retry_seconds, f"batch {batch_id}")


def _keys(rows: Rows, columns: tuple[str, ...]) -> list[tuple]:
    """The ``columns`` of every row of ``rows`` (an Arrow table of the batch)."""
    if isinstance(rows, pa.Table):
        return list(zip(*(rows.column(c).to_pylist() for c in columns), strict=True))
    raise TypeError("the batch's rows of a kind are an Arrow table")
