"""Delta copies of ``candles`` and ``reconciliation``, made beside the micro-batches.

Like ``GoldSync`` for the metrics (``pipelines.gold.sync``): every fold or reconciliation
stamps the rows it changed with a new ``change_seq``; ``TableCopies`` copies this lake's
rows whose ``change_seq`` is above the last one a table's commit recorded, with one
``MERGE`` per table and round (every ``CRYPTOFLOW_GOLD_SYNC_INTERVAL_MS``, and once more on
stop). A row copied twice is the same row, so a round after a crash converges exactly. The
Delta rows are the PostgreSQL rows, column for column (``differences`` as JSON text), plus a
date partition column.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from delta.tables import DeltaTable
from psycopg2 import sql
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.services.postgres import pipeline_dsn
from pipelines.gold.fold import fetch_dicts
from pipelines.gold.rounds import Rounds
from pipelines.gold.sync import LOOKBACK, USER_METADATA
from pipelines.ledger import commit_metadata
from pipelines.log_checkpoints import NO_INLINE_CHECKPOINTS

log = logging.getLogger(__name__)
_PRICE, _SUM = T.DecimalType(18, 8), T.DecimalType(28, 8)
_PRODUCTS = T.DecimalType(38, 16)  # Σp·q of decimal(18,8) prices and quantities: exact


def _field(name: str, kind: T.DataType) -> T.StructField:
    return T.StructField(name, kind, False)


CANDLE_SCHEMA = T.StructType(
    [
        _field("symbol", T.StringType()),
        _field("interval", T.StringType()),
        _field("open_time", T.TimestampType()),
        _field("close_time", T.TimestampType()),
        *(_field(c, _PRICE) for c in ("open", "high", "low", "close")),
        _field("volume", _SUM),
        _field("quote_volume", _PRODUCTS),
        _field("trades", T.LongType()),
        _field("taker_buy_volume", _SUM),
        _field("taker_buy_quote_volume", _PRODUCTS),
        _field("first_trade_id", T.LongType()),
        _field("last_trade_id", T.LongType()),
        _field("open_date", T.DateType()),
    ]
)
RECONCILIATION_SCHEMA = T.StructType(
    [
        _field("symbol", T.StringType()),
        _field("minute", T.TimestampType()),
        _field("status", T.StringType()),
        _field("differences", T.StringType()),  # JSON text of the jsonb column
        _field("checked_at", T.TimestampType()),
        _field("minute_date", T.DateType()),
    ]
)


@dataclass(frozen=True)
class Copied:
    """A PostgreSQL table copied to the Delta table ``name`` under the lake: its schema, key
    and (date partition column, timestamp column it is the UTC date of)."""

    name: str
    schema: T.StructType
    key: tuple[str, ...]
    date: tuple[str, str]

    def row(self, pg: Mapping[str, Any]) -> tuple:
        """A PostgreSQL row (dict) as a Delta row of ``schema``."""
        values = dict(pg)
        values[self.date[0]] = pg[self.date[1]].astimezone(UTC).date()
        if "differences" in values:
            values["differences"] = json.dumps(values["differences"], sort_keys=True)
        return tuple(values[f] for f in self.schema.fieldNames())


CANDLES = Copied("candles", CANDLE_SCHEMA, ("symbol", "interval", "open_time"),
                 ("open_date", "open_time"))  # fmt: skip
RECONCILIATION = Copied("reconciliation", RECONCILIATION_SCHEMA, ("symbol", "minute"),
                        ("minute_date", "minute"))  # fmt: skip
COPIED = (CANDLES, RECONCILIATION)


def ensure_candle_tables(spark: SparkSession, settings: Settings) -> None:
    """Create the Delta tables ``candles`` and ``reconciliation`` (partitioned by date)
    unless they exist."""
    for table in COPIED:
        (
            DeltaTable.createIfNotExists(spark)
            .location(settings.table_path(table.name))
            .addColumns(table.schema)
            .partitionedBy(table.date[0])
            .property(*NO_INLINE_CHECKPOINTS)
            .execute()
        )


def copied_change_seq(spark: SparkSession, path: str, table: Copied) -> int:
    """The highest ``change_seq`` a commit of the Delta table says it holds (0: none)."""
    key = f"{table.name}_change_seq"
    for _, meta in commit_metadata(spark, path, LOOKBACK):
        if key in meta:
            return int(meta[key])
    return 0


class TableCopies(Rounds):
    """Copies changed candles and reconciliation rows of ``lake`` (the gold table path the
    fold was given) into their Delta tables: ``sync()`` once, or rounds in a thread."""

    thread_name = "candle-sync"

    def __init__(self, spark: SparkSession, settings: Settings, interval_s: float) -> None:
        self._spark = spark.newSession()  # userMetadata is a session setting
        self._settings = settings
        self._lake = settings.table_path("gold")
        self._dsn = pipeline_dsn(settings)
        super().__init__(interval_s)
        self._copied: dict[str, int] = {}

    def _changed(self, table: Copied, after: int) -> list[dict[str, Any]]:
        conn = connect(self._dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "SELECT * FROM {} WHERE lake = %s AND change_seq > %s ORDER BY change_seq"
                    ).format(sql.Identifier(table.name)),
                    (self._lake, after),
                )
                return fetch_dicts(cur)
        finally:
            conn.close()

    def _sync_one(self, table: Copied) -> int:
        path = self._settings.table_path(table.name)
        if table.name not in self._copied:
            self._copied[table.name] = copied_change_seq(self._spark, path, table)
        rows = self._changed(table, self._copied[table.name])
        if not rows:
            return 0
        high = max(r["change_seq"] for r in rows)
        delta = [table.row(r) for r in rows]
        frame = self._spark.createDataFrame(delta, schema=table.schema)
        date = table.date[0]
        dates = ", ".join(sorted({f"DATE'{d[table.schema.fieldNames().index(date)]}'"
                                  for d in delta}))  # fmt: skip
        on = " AND ".join([f"t.`{date}` IN ({dates})", *(f"t.`{k}` = s.`{k}`" for k in table.key)])
        self._spark.conf.set(USER_METADATA, json.dumps({f"{table.name}_change_seq": high}))
        try:
            (
                DeltaTable.forPath(self._spark, path)
                .alias("t")
                .merge(frame.alias("s"), on)
                .whenMatchedUpdateAll()
                .whenNotMatchedInsertAll()
                .execute()
            )
        finally:
            self._spark.conf.unset(USER_METADATA)
        self._copied[table.name] = high
        log.info("%s sync rows=%d change_seq=%d", table.name, len(rows), high)
        return len(rows)

    def sync(self) -> dict[str, int]:
        """Copy every row changed since the last copy; returns how many per table."""
        with self._lock:
            return {t.name: self._sync_one(t) for t in COPIED}


def table_copies(spark: SparkSession, settings: Settings) -> TableCopies:
    """The copier of this lake's candles and reconciliation rows (not started)."""
    return TableCopies(spark, settings, settings.gold_sync_interval_ms / 1000)
