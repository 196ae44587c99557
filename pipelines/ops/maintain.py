"""Table maintenance: compact small files, then vacuum without cutting into time travel.

Safe while the streams run: compaction commits with ``dataChange=false`` (streaming readers
skip it); a compaction that loses a race with a concurrent commit is retried. By default
only closed date partitions (before today, UTC) of a partitioned table are compacted, so a
job's MERGE into today's partition never finds its files compacted away underneath it.
VACUUM only deletes files no version inside the retention still references. Retention
properties are written only when they differ and the table is idle (or on request): a
metadata commit makes a concurrent writer's in-flight commit fail (MetadataChangedException).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from cryptoflow.core.config import TABLES, Settings
from cryptoflow.core.errors import CryptoflowError
from cryptoflow.core.services.postgres import admin_dsn
from pipelines.jvm import jvm
from pipelines.ops.retention import DayPartition, drop_expired, ensure_ahead
from pipelines.ops.tables import table_path

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Delta keeps its log 30 days by default; maintain never shortens it below that.
DEFAULT_LOG_RETENTION_HOURS = 30 * 24
_CONFLICTS = ("Concurrent", "MetadataChanged", "ProtocolChanged")
#: A table committed to this recently is being written: its properties are left alone.
BUSY_SECONDS = 120


class MaintenanceError(CryptoflowError):
    """A maintenance request that would break the time-travel window, or kept conflicting."""


@dataclass(frozen=True)
class TableReport:
    table: str
    files_before: int
    files_after: int
    files_compacted: int  # small files rewritten (0 in a dry run)
    files_vacuumed: int  # unreferenced files deleted (in a dry run: that would be)
    properties_set: tuple[str, ...]
    dry_run: bool


def check_retention(settings: Settings, retain_hours: int | None) -> int:
    """The vacuum retention to use; below the time-travel window it is refused."""
    window = settings.time_travel_retention_hours
    hours = window if retain_hours is None else retain_hours
    if hours < window:
        raise MaintenanceError(
            f"refusing to vacuum with a retention of {hours} h: below the time-travel window "
            f"of {window} h (CRYPTOFLOW_TIME_TRAVEL_RETENTION_HOURS); versions inside the "
            "window would lose their files. Use a larger --retain-hours, or lower the window "
            "on purpose"
        )
    return hours


def retention_properties(hours: int) -> dict[str, str]:
    """Table properties that make Delta itself honour the window."""
    log_hours = max(hours, DEFAULT_LOG_RETENTION_HOURS)
    return {
        "delta.deletedFileRetentionDuration": f"interval {hours} hours",
        "delta.logRetentionDuration": f"interval {log_hours} hours",
    }


def with_retries(what: str, attempts: int, action: Callable[[], T]) -> T:
    """Run ``action``, retrying when it lost an optimistic-concurrency race."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as e:
            if not any(word in str(e) for word in _CONFLICTS) or attempt == attempts:
                if any(word in str(e) for word in _CONFLICTS):
                    raise MaintenanceError(
                        f"{what} kept conflicting with concurrent commits ({attempts} attempts): "
                        "run maintain again, or raise CRYPTOFLOW_MAINTAIN_RETRIES"
                    ) from e
                raise
            log.info("maintain conflict what=%s attempt=%d retrying", what, attempt)
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _file_count(spark: SparkSession, path: str) -> int:
    return DeltaTable.forPath(spark, path).detail().take(1)[0].numFiles


def _quoted(path: str) -> str:
    return "delta.`" + path.replace("`", "``") + "`"


def _missing_properties(spark: SparkSession, path: str, wanted: dict[str, str]) -> dict[str, str]:
    current = DeltaTable.forPath(spark, path).detail().take(1)[0].properties or {}
    return {k: v for k, v in wanted.items() if current.get(k) != v}


def _closed_partitions(spark: SparkSession, path: str) -> str | None:
    """A filter on the partitions no stream writes any more (date partitions before today,
    UTC), or None for an unpartitioned table (compacted whole)."""
    detail = DeltaTable.forPath(spark, path).detail().take(1)[0]
    columns = list(detail.partitionColumns or [])
    if not columns:
        return None
    schema = spark.read.format("delta").load(path).schema
    if schema[columns[0]].dataType.typeName() != "date":
        return None
    return f"`{columns[0]}` < current_date()"


def _idle_seconds(spark: SparkSession, path: str) -> float:
    last = DeltaTable.forPath(spark, path).history(1).select("timestamp").take(1)[0].timestamp
    return time.time() - last.timestamp()


def maintain_table(
    spark: SparkSession,
    settings: Settings,
    name: str,
    retain_hours: int,
    dry_run: bool = False,
    all_partitions: bool = False,
    set_properties: bool = False,
) -> TableReport:
    """Compact, set the retention properties if needed (and safe), vacuum one table."""
    path = table_path(settings, name)
    before = _file_count(spark, path)
    missing = _missing_properties(spark, path, retention_properties(retain_hours))
    if dry_run:
        doomed = spark.sql(f"VACUUM {_quoted(path)} RETAIN {retain_hours} HOURS DRY RUN").count()
        return TableReport(name, before, before, 0, doomed, tuple(missing), True)
    table = DeltaTable.forPath(spark, path)
    where = None if all_partitions else _closed_partitions(spark, path)
    builder = table.optimize() if where is None else table.optimize().where(where)
    result = with_retries(
        f"compaction of {name}",
        settings.maintain_retries,
        lambda: builder.executeCompaction().select("metrics.numFilesRemoved").first(),
    )
    compacted = int(result[0] or 0) if result else 0
    applied: tuple[str, ...] = ()
    if missing and (set_properties or _idle_seconds(spark, path) > BUSY_SECONDS):
        assignments = ", ".join(f"'{k}' = '{v}'" for k, v in missing.items())
        with_retries(
            f"retention properties of {name}",
            settings.maintain_retries,
            lambda: spark.sql(f"ALTER TABLE {_quoted(path)} SET TBLPROPERTIES ({assignments})"),
        )
        applied = tuple(missing)
    elif missing:
        log.warning(
            "maintain table=%s retention properties deferred: the table was written in the "
            "last %d s and a metadata commit would fail that writer; run maintain while the "
            "jobs are stopped, or with --set-properties",
            name,
            BUSY_SECONDS,
        )
    files_before_vacuum = _count_data_files(spark, path)
    _vacuum(spark, table, retain_hours, override_check=bool(missing) and not applied)
    vacuumed = max(0, files_before_vacuum - _count_data_files(spark, path))
    after = _file_count(spark, path)
    log.info(
        "maintain table=%s files_before=%d files_after=%d compacted=%d vacuumed=%d "
        "retain_hours=%d properties_set=%d",
        name,
        before,
        after,
        compacted,
        vacuumed,
        retain_hours,
        len(applied),
    )
    return TableReport(name, before, after, compacted, vacuumed, applied, False)


def _vacuum(spark: SparkSession, table: DeltaTable, hours: int, override_check: bool) -> None:
    """VACUUM; when the table's retention property could not be set yet, Delta's own
    168 h check is switched off for this call only (``check_retention`` already guarded)."""
    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    if not override_check:
        table.vacuum(float(hours))
        return
    previous = spark.conf.get(key, "true") or "true"  # typed Optional; not with a default
    spark.conf.set(key, "false")
    try:
        table.vacuum(float(hours))
    finally:
        spark.conf.set(key, previous)


def _count_data_files(spark: SparkSession, path: str) -> int:
    """Parquet files on storage (referenced or not), through Hadoop's filesystem API.

    Walks the partition folders only: ``_delta_log`` and hidden files are skipped by name
    before anything reads them, since a concurrent writer creates and renames temporary
    files there (a recursive listing failed on one that vanished while being listed)."""
    root = jvm(spark).org.apache.hadoop.fs.Path(path)
    fs = root.getFileSystem(spark._jsc.hadoopConfiguration())
    count, folders = 0, [root]
    while folders:
        for status in fs.listStatus(folders.pop()):
            name = status.getPath().getName()
            if name.startswith(("_", ".")):
                continue
            if status.isDirectory():
                folders.append(status.getPath())
            elif name.endswith(".parquet"):
                count += 1
    return count


def maintain(
    spark: SparkSession,
    settings: Settings,
    tables: Sequence[str] | None = None,
    retain_hours: int | None = None,
    dry_run: bool = False,
    all_partitions: bool = False,
    set_properties: bool = False,
) -> list[TableReport]:
    """Maintain ``tables`` (default: every lakehouse table that exists)."""
    hours = check_retention(settings, retain_hours)
    names = list(tables) if tables else list(TABLES)
    reports = []
    for name in names:
        path = table_path(settings, name)
        if not DeltaTable.isDeltaTable(spark, path):
            if tables:
                raise MaintenanceError(f"table {name} does not exist yet at {path}")
            continue
        reports.append(
            maintain_table(spark, settings, name, hours, dry_run, all_partitions, set_properties)
        )
    return reports


def maintain_serving(settings: Settings, dry_run: bool = False) -> list[DayPartition]:
    """PostgreSQL's serving tables: make the next days' partitions, drop those older than
    ``serving_retention_days`` (``pipelines.ops.retention``); returns the dropped ones."""
    dsn = admin_dsn(settings)
    if not dry_run:
        ensure_ahead(dsn)
    return drop_expired(dsn, settings.serving_retention_days, dry_run=dry_run)
