"""``cryptoflow status``: services, checkpoints, recent micro-batches and the last hour's
reconciliation in one screen."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptoflow.core import services as svc
from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.errors import CryptoflowError
from cryptoflow.core.services.postgres import reader_dsn
from pipelines.ops.checkpoints import list_checkpoints
from pipelines.ops.reconciliation import all_match, summary, summary_line
from pipelines.ops.render import render

BATCH_COLUMNS = (
    "job",
    "batch_id",
    "input_rows",
    "output_rows",
    "quarantined",
    "late",
    "duration_ms",
    "latency_p50_ms",
    "latency_p99_ms",
    "kafka_lag",
    "recorded_at",
)


def recent_batches(settings: Settings, per_job: int) -> list[tuple[Any, ...]]:
    """The newest ``per_job`` rows of each job in pipeline_batches (read-only login)."""
    conn = connect(reader_dsn(settings))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT job, batch_id, input_rows, output_rows, quarantined, late, duration_ms,"
                " latency_p50_ms, latency_p99_ms, kafka_lag, recorded_at FROM ("
                "  SELECT *, row_number() OVER (PARTITION BY job ORDER BY recorded_at DESC,"
                "  batch_id DESC) AS n FROM pipeline_batches) b"
                " WHERE n <= %s ORDER BY job, recorded_at DESC, batch_id DESC",
                (per_job,),
            )
            return cur.fetchall()
    finally:
        conn.close()


def reconciliation_text(settings: Settings, since: datetime) -> str:
    """The reconciliation summary since ``since`` (``cryptoflow reconcile``'s last line), or
    why there is none."""
    conn = connect(reader_dsn(settings))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('reconciliation') IS NOT NULL")
            if not cur.fetchone()[0]:
                return "not set up (apply the migrations: `cryptoflow setup`)"
            counts = summary(cur, since)
    finally:
        conn.close()
    if not any(counts.values()):
        return "no minute reconciled yet (needs the kline_1m stream: CRYPTOFLOW_STREAMS)"
    return summary_line(counts) + ("" if all_match(counts) else "  (see `cryptoflow reconcile`)")


def _age(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "-"
    seconds = (now - ts).total_seconds()
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}min ago"


def _number(value: Any) -> Any:
    return round(value, 1) if isinstance(value, float) else value


def snapshot(settings: Settings, services: Sequence[Any] | None = None) -> str:
    """One screen of status text. ``services`` defaults to ``cryptoflow.core.services.status``."""

    now = datetime.now(UTC)
    lines = [f"cryptoflow status  {now.isoformat(timespec='seconds')}", "", "services"]
    for s in services if services is not None else svc.status(settings):
        lines.append(f"  {s.name:<9} {'up' if s.healthy else 'DOWN':<5} {s.mode:<9} {s.detail}")
    lines += ["", "checkpoints"]
    rows = [
        (c.job, c.last_committed, _age(c.committed_at, now), " | ".join(c.positions) or "-")
        for c in list_checkpoints(settings)
        if c.exists or c.job == "trades"
    ]
    lines += [
        "  " + line for line in render(("job", "batch", "committed", "position"), rows).splitlines()
    ]
    try:
        reconciled = reconciliation_text(settings, now - timedelta(hours=1))
    except CryptoflowError as e:
        reconciled = f"unavailable: {e}"
    lines += ["", "reconciliation (last hour)", f"  {reconciled}"]
    lines += ["", f"recent batches (newest {settings.status_batches} per job)"]
    try:
        batches = recent_batches(settings, settings.status_batches)
    except CryptoflowError as e:
        lines.append(f"  unavailable: {e}")
        return "\n".join(lines)
    if not batches:
        lines.append("  none recorded yet (start the jobs: `cryptoflow up`)")
        return "\n".join(lines)
    shown = [tuple(_number(v) for v in row[:-1]) + (_age(row[-1], now),) for row in batches]
    lines += ["  " + line for line in render(BATCH_COLUMNS, shown).splitlines()]
    return "\n".join(lines)
