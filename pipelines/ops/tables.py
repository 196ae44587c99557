"""The lakehouse's Delta tables by name: history, time travel, SQL over temp views."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cryptoflow.core.config import TABLES, Settings
from cryptoflow.core.errors import CryptoflowError, first_line


class TableError(CryptoflowError):
    """An unknown table name, a missing table, or a version outside a table's history."""


def table_path(settings: Settings, name: str) -> str:
    """Path of the Delta table ``name``; an unknown name is an error listing the known ones."""
    if name not in TABLES:
        raise TableError(f"unknown table {name!r}: the tables are {', '.join(TABLES)}")
    return settings.table_path(name)


def delta_table(spark: SparkSession, settings: Settings, name: str) -> DeltaTable:
    path = table_path(settings, name)
    if not DeltaTable.isDeltaTable(spark, path):
        raise TableError(
            f"table {name} does not exist yet at {path}: start its job (`cryptoflow run`) first"
        )
    return DeltaTable.forPath(spark, path)


@dataclass(frozen=True)
class HistoryEntry:
    version: int
    timestamp: datetime
    operation: str
    rows: int | None  # rows written by the commit (None: not a data write)
    detail: str  # the other numbers that matter for this operation


def rows_written(operation: str, metrics: Mapping[str, str]) -> tuple[int | None, str]:
    """(rows written, detail) from a commit's ``operationMetrics``."""
    m = {k: int(v) for k, v in (metrics or {}).items() if str(v).lstrip("-").isdigit()}
    if "numTargetRowsInserted" in m:  # MERGE
        rows = m["numTargetRowsInserted"] + m.get("numTargetRowsUpdated", 0)
        return rows, (
            f"inserted={m['numTargetRowsInserted']} updated={m.get('numTargetRowsUpdated', 0)} "
            f"deleted={m.get('numTargetRowsDeleted', 0)}"
        )
    if "numDeletedRows" in m:  # DELETE
        return 0, f"deleted={m['numDeletedRows']}"
    if "numOutputRows" in m:  # WRITE, STREAMING UPDATE, CREATE TABLE AS SELECT
        return m["numOutputRows"], f"files+={m.get('numFiles', m.get('numAddedFiles', 0))}"
    if "numAddedFiles" in m or "numRemovedFiles" in m:  # OPTIMIZE
        return None, f"files+={m.get('numAddedFiles', 0)} files-={m.get('numRemovedFiles', 0)}"
    if "numDeletedFiles" in m:  # VACUUM END
        return None, f"files_deleted={m['numDeletedFiles']}"
    return None, ""


def history(spark: SparkSession, settings: Settings, name: str, limit: int | None = None):
    """The table's commits, newest first."""
    table = delta_table(spark, settings, name)
    rows = (table.history(limit) if limit else table.history()).select(
        "version", "timestamp", "operation", "operationMetrics"
    )
    out = []
    for r in rows.collect():
        count, detail = rows_written(r.operation, r.operationMetrics)
        out.append(HistoryEntry(r.version, r.timestamp, r.operation, count, detail))
    return out


def version_range(spark: SparkSession, settings: Settings, name: str) -> tuple[int, int]:
    """(oldest, newest) version still in the table's log."""
    versions = (
        delta_table(spark, settings, name)
        .history()
        .agg(F.min("version").alias("lo"), F.max("version").alias("hi"))
    )
    row = versions.take(1)[0]
    return row.lo, row.hi


def parse_as_of(text: str | None) -> int | str | None:
    """``--as-of``: an integer is a version, anything else a timestamp."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else text


def read_table(
    spark: SparkSession, settings: Settings, name: str, as_of: int | str | None = None
) -> DataFrame:
    """The table now, at a version, or at a timestamp; out-of-range points are errors."""
    path = table_path(settings, name)
    delta_table(spark, settings, name)  # exists?
    reader = spark.read.format("delta")
    if isinstance(as_of, int):
        lo, hi = version_range(spark, settings, name)
        if not lo <= as_of <= hi:
            raise TableError(
                f"version {as_of} is outside {name}'s history (versions {lo}..{hi}): "
                f"see `cryptoflow history {name}`"
            )
        reader = reader.option("versionAsOf", as_of)
    elif as_of is not None:
        reader = reader.option("timestampAsOf", as_of)
    try:
        df = reader.load(path)
        _ = df.schema  # resolves the snapshot: bad timestamps fail here
    except AnalysisException as e:
        raise TableError(f"{name} as of {as_of!r}: {first_line(e)}") from e
    return df


def tables_in(query: str) -> list[str]:
    """Which of the lakehouse tables ``query`` mentions (as whole words)."""
    return [t for t in TABLES if re.search(rf"\b{t}\b", query, re.IGNORECASE)]


_MISSING = re.compile(r"TABLE_OR_VIEW_NOT_FOUND.*?`?([\w.]+)`? cannot be found", re.DOTALL)


def run_query(
    spark: SparkSession, settings: Settings, query: str, as_of: int | str | None = None
) -> DataFrame:
    """Run SQL over temp views bronze/silver/quarantine/gold (read as of ``as_of``)."""
    for name in tables_in(query):
        read_table(spark, settings, name, as_of).createOrReplaceTempView(name)
    try:
        return spark.sql(query)
    except AnalysisException as e:
        missing = _MISSING.search(str(e))
        if missing:
            raise TableError(
                f"unknown table {missing.group(1)!r} in the query: the tables are "
                f"{', '.join(TABLES)}"
            ) from e
        raise TableError(f"query failed: {first_line(e)}") from e
