"""Pipeline analytics: one ``pipeline_batches`` row per micro-batch of every streaming job.

Two writers fill the same row, each with the columns it knows, upserted on (job, batch_id)
so a replayed batch rewrites its row instead of adding one:

* ``BatchRecorder``, a ``StreamingQueryListener`` attached once per Spark session
  (``attach_recorder``), reads every named query's progress: batch id, input rows,
  duration, sink output rows, Kafka lag (latest minus end offset per partition), and any
  observed metrics (``df.observe``) whose names are columns of the table.
* ``record_batch`` lets a job add what only it knows (quarantined, late rows, latency
  percentiles of its output).

Recording is best effort: a failure is logged and never fails the batch.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2 import sql
from pyspark.sql import SparkSession

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.errors import CryptoflowError, first_line
from cryptoflow.core.services.postgres import pipeline_dsn
from pipelines.progress import JsonProgressListener

log = logging.getLogger(__name__)

NUMBER_COLUMNS = (
    "query_id",
    "input_rows",
    "output_rows",
    "quarantined",
    "late",
    "duration_ms",
    "latency_p50_ms",
    "latency_p99_ms",
    "kafka_lag",
    "batch_time",
)


def upsert_statement(columns: list[str]) -> sql.Composed:
    """INSERT of (job, batch_id, columns...) that, on a repeat, overwrites only the given
    non-NULL columns: the listener and the job can each fill their part in any order."""
    names = ["job", "batch_id", *columns]
    updates = [
        sql.SQL("{0} = COALESCE(EXCLUDED.{0}, pipeline_batches.{0})").format(sql.Identifier(c))
        for c in columns
    ] + [sql.SQL("recorded_at = clock_timestamp()")]
    return sql.SQL(
        "INSERT INTO pipeline_batches ({cols}) VALUES ({vals}) "
        "ON CONFLICT (job, batch_id) DO UPDATE SET {updates}"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in names),
        vals=sql.SQL(", ").join(sql.Placeholder() for _ in names),
        updates=sql.SQL(", ").join(updates),
    )


class _Connections:
    """One reused connection per DSN (the listener records several rows a second)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: dict[str, Any] = {}

    def execute(self, dsn: str, statement: sql.Composed, params: list[Any]) -> None:
        with self._lock:
            conn = self._conns.get(dsn)
            if conn is None or conn.closed:
                conn = self._conns[dsn] = connect(dsn)
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(statement, params)
            except psycopg2.Error:
                conn.close()
                self._conns.pop(dsn, None)
                raise


_CONNECTIONS = _Connections()


def record_batch(settings: Settings, job: str, batch_id: int, **numbers: Any) -> bool:
    """Upsert the given numbers of (job, batch_id); returns False (logged) if that failed.

    Keys are ``NUMBER_COLUMNS``; None values leave what is recorded untouched.
    """
    unknown = sorted(set(numbers) - set(NUMBER_COLUMNS))
    if unknown:
        raise ValueError(f"record_batch: unknown numbers {unknown}; known: {NUMBER_COLUMNS}")
    columns = [c for c in NUMBER_COLUMNS if numbers.get(c) is not None]
    params = [job, int(batch_id), *(numbers[c] for c in columns)]
    try:
        _CONNECTIONS.execute(pipeline_dsn(settings), upsert_statement(columns), params)
        return True
    except (psycopg2.Error, CryptoflowError, OSError) as e:
        reason = first_line(e)
        log.warning(
            "pipeline_batches not recorded job=%s batch=%d reason=%s", job, batch_id, reason
        )
        return False


def kafka_lag(sources: list[Mapping[str, Any]]) -> int | None:
    """Records Kafka held beyond what the batch read: Σ (latestOffset - endOffset)."""
    lag, seen = 0, False
    for src in sources:
        if not str(src.get("description", "")).startswith("Kafka"):
            continue
        end, latest = _as_json(src.get("endOffset")), _as_json(src.get("latestOffset"))
        if not isinstance(end, dict) or not isinstance(latest, dict):
            continue
        for topic, partitions in latest.items():
            for part, offset in partitions.items():
                done = end.get(topic, {}).get(part)
                if done is not None:
                    lag += max(0, int(offset) - int(done))
                    seen = True
    return lag if seen else None


def _as_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def progress_numbers(progress: Mapping[str, Any]) -> dict[str, Any]:
    """The ``pipeline_batches`` numbers in a query progress (its JSON as a dict)."""
    sink_rows = (progress.get("sink") or {}).get("numOutputRows")
    timestamp = progress.get("timestamp")
    numbers: dict[str, Any] = {
        "query_id": progress.get("id"),
        "input_rows": progress.get("numInputRows"),
        "duration_ms": (progress.get("durationMs") or {}).get("triggerExecution"),
        "output_rows": sink_rows if sink_rows is not None and sink_rows >= 0 else None,
        "kafka_lag": kafka_lag(progress.get("sources") or []),
        "batch_time": datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        if timestamp
        else None,
    }
    for observed in (progress.get("observedMetrics") or {}).values():
        for key, value in (observed or {}).items():
            if key in NUMBER_COLUMNS and value is not None:
                numbers[key] = value
    return numbers


class BatchRecorder(JsonProgressListener):
    """Records every named query's micro-batches into ``pipeline_batches``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.recorded = 0

    def onQueryStarted(self, event) -> None:  # noqa: N802 (Spark's name)
        pass

    def onQueryProgress(self, event) -> None:  # noqa: N802
        try:
            progress = json.loads(event.progress.json)
            job = progress.get("name")
            if not job:
                return
            numbers = progress_numbers(progress)
            if record_batch(self.settings, job, progress["batchId"], **numbers):
                self.recorded += 1
        except Exception as e:  # a listener must never break the listener bus
            log.warning("pipeline_batches listener failed reason=%s", e)

    def onQueryIdle(self, event) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event) -> None:  # noqa: N802
        pass


_ATTACHED: dict[int, BatchRecorder] = {}
_ATTACH_LOCK = threading.Lock()


def attach_recorder(spark: SparkSession, settings: Settings) -> BatchRecorder:
    """Attach the recorder to ``spark`` once; later calls return it, recording from then on
    into the database of their ``settings`` (the latest job started wins)."""
    key = id(spark)
    with _ATTACH_LOCK:
        if key not in _ATTACHED:
            recorder = BatchRecorder(settings)
            spark.streams.addListener(recorder)
            _ATTACHED[key] = recorder
            log.info("pipeline_batches recorder attached")
        _ATTACHED[key].settings = settings
        return _ATTACHED[key]
