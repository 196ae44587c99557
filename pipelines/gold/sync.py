"""Delta gold: the folded windows copied from PostgreSQL, beside the micro-batches.

The micro-batch folds its trades into ``metric_sums`` in the serving transaction
(``pipelines.gold.fold``); every fold stamps the windows it changed with a new
``change_seq``. ``GoldSync`` copies the windows of this lake whose ``change_seq`` is above
the last one it copied into Delta gold: the same ``finish`` over the same exact sums, so a
Delta gold row equals its ``metrics`` row, column for column. One ``MERGE`` per round,
every ``CRYPTOFLOW_GOLD_SYNC_INTERVAL_MS`` (a ``MERGE`` costs 3-4x an append here, too much
for every batch), and once more when the query stops. The commit records the highest
``change_seq`` it holds; a round after a crash copies again whatever came after that (a
window copied twice is the same row, so it converges exactly).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from cryptoflow.core.db import connect
from pipelines.gold.fold import as_window_sums, fetch_dicts
from pipelines.gold.rounds import Rounds
from pipelines.gold.transform import GOLD_SCHEMA, finish, gold_frame
from pipelines.ledger import commit_metadata
from pipelines.log_checkpoints import NO_INLINE_CHECKPOINTS

log = logging.getLogger(__name__)
#: Delta's session setting for a commit's ``userMetadata`` (MERGE has no writer option).
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
#: How far back a restart looks in gold's history for the last copied ``change_seq``.
LOOKBACK = 100


def ensure_gold_table(spark: SparkSession, path: str) -> None:
    """Create the gold Delta table (partitioned by window_date) unless it exists."""
    (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(GOLD_SCHEMA)
        .partitionedBy("window_date")
        .property(*NO_INLINE_CHECKPOINTS)
        .execute()
    )


def copied_change_seq(spark: SparkSession, path: str) -> int:
    """The highest ``change_seq`` a commit of gold says it holds (0: none found)."""
    for _, meta in commit_metadata(spark, path, LOOKBACK):
        if "gold_change_seq" in meta:
            return int(meta["gold_change_seq"])
    return 0


def changed_windows(dsn: str, lake: str, after: int) -> list[dict[str, Any]]:
    """``lake``'s ``metric_sums`` rows changed after ``after``, oldest change first."""
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT * FROM metric_sums WHERE lake = %s AND change_seq > %s ORDER BY change_seq",
                (lake, after),
            )
            return fetch_dicts(cur)
    finally:
        conn.close()


class GoldSync(Rounds):
    """Copies changed windows into Delta gold: ``sync()`` once, or rounds in a thread."""

    thread_name = "gold-sync"

    def __init__(self, spark: SparkSession, path: str, dsn: str, interval_s: float) -> None:
        # A session of its own: the commit's userMetadata is a session setting, and the
        # batches' appends run in the other session meanwhile.
        self._spark = spark.newSession()
        self.path = path
        self._dsn = dsn
        super().__init__(interval_s)
        self._copied: int | None = None

    def sync(self) -> int:
        """Copy every window changed since the last copy; returns how many."""
        with self._lock:
            if self._copied is None:
                self._copied = copied_change_seq(self._spark, self.path)
            rows = changed_windows(self._dsn, self.path, self._copied)
            if not rows:
                return 0
            high = max(r["change_seq"] for r in rows)
            windows = [finish(as_window_sums(r)) for r in rows]
            gold = gold_frame(self._spark, windows)
            dates = ", ".join(sorted({f"DATE'{w['window_date']}'" for w in windows}))
            self._spark.conf.set(USER_METADATA, json.dumps({"gold_change_seq": high}))
            try:
                (
                    DeltaTable.forPath(self._spark, self.path)
                    .alias("t")
                    .merge(
                        gold.alias("s"),
                        f"t.window_date IN ({dates}) AND t.symbol = s.symbol "
                        "AND t.window_seconds = s.window_seconds "
                        "AND t.window_start = s.window_start",
                    )
                    .whenMatchedUpdateAll()
                    .whenNotMatchedInsertAll()
                    .execute()
                )
            finally:
                self._spark.conf.unset(USER_METADATA)
            self._copied = high
            log.info("gold sync windows=%d change_seq=%d", len(rows), high)
            return len(rows)
