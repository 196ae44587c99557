"""One micro-batch's PostgreSQL transaction: every kind's rows, quarantine, gold and the ledger.

In one transaction (retried while PostgreSQL is unreachable, ``pipelines.serving``):
1. the ledger: if ``applied_batches`` holds (query, batch), the batch was applied before a
   crash and nothing is done again;
2. the batch's new trades are staged and inserted into ``raw_trades``, and exactly the rows
   inserted are folded into the windows' sums and ``metrics`` (``pipelines.gold.fold``);
3. the other stream kinds' rows are upserted into their serving tables (``UpsertSpec``);
4. the rejected records are upserted into ``quarantine`` (first write of a key wins);
5. the ledger row.
A reader therefore never sees a window whose trades are not in raw_trades, nor the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2.extensions

from pipelines.gold.fold import fold_trades
from pipelines.serving import Rows, UpsertSpec, copy_upsert, in_transaction, stage_rows
from pipelines.silver.tables import QUARANTINE, RAW_TRADES


@dataclass(frozen=True)
class Served:
    """What a batch's transaction did (``replayed``: the ledger had it, nothing was done)."""

    trades: int = 0
    quarantined: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows changed per other serving table
    windows: list[dict[str, Any]] = field(default_factory=list)
    replayed: bool = False


def serve_batch(
    dsn: str,
    query_id: str,
    batch_id: int,
    trades: Rows,
    quarantined: Sequence[Sequence[Any]],
    lake: str,
    lengths: Sequence[int],
    retry_seconds: float,
    others: Sequence[tuple[UpsertSpec, Rows]] = (),
) -> Served:
    """Apply one batch to the serving tables exactly once (module doc)."""

    def apply(cur: psycopg2.extensions.cursor) -> Served:
        cur.execute(
            "SELECT 1 FROM applied_batches WHERE query_id = %s AND batch_id = %s",
            (query_id, batch_id),
        )
        if cur.fetchone() is not None:
            return Served(replayed=True)
        new = 0
        windows: list[dict[str, Any]] = []
        if len(trades):
            stage = stage_rows(cur, RAW_TRADES, trades)
            new, windows = fold_trades(cur, RAW_TRADES.columns, stage, lake, lengths)
        rows = {spec.table: copy_upsert(cur, spec, r) for spec, r in others if len(r)}
        rejected = copy_upsert(cur, QUARANTINE, quarantined) if quarantined else 0
        cur.execute(
            "INSERT INTO applied_batches (query_id, batch_id, trades, quarantined) "
            "VALUES (%s, %s, %s, %s)",
            (query_id, batch_id, new, rejected),
        )
        return Served(new, rejected, rows, windows)

    return in_transaction(dsn, apply, retry_seconds, f"batch {batch_id}")
