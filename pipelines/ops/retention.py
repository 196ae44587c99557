"""Day partitions of the PostgreSQL serving tables: made ahead, dropped after the retention.

raw_trades and metrics are partitioned by the UTC day of their time (sql/090_day_partitions.sql,
docs/serving.md). Writers create the day of any row they insert (``pipelines.serving``), so
``ensure_ahead`` only spares the first batch after midnight that step. ``drop_expired`` drops
the partitions wholly older than ``CRYPTOFLOW_SERVING_RETENTION_DAYS`` (0: keep every day) as
one ``DROP TABLE`` each: no row-by-row DELETE, no bloat. The lake keeps every trade:
``cryptoflow replay serving --day D`` refills a dropped day (``pipelines.ops.refill``).
Both need the admin login (DDL); ``cryptoflow maintain`` runs them, and ``cryptoflow up``
every hour while retention is on (``start_periodic``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from psycopg2 import sql

from cryptoflow.core.db import connect
from cryptoflow.core.errors import first_line
from pipelines.serving import DAY_PARTITIONED

log = logging.getLogger(__name__)
#: Days after today whose partitions ``ensure_ahead`` makes.
AHEAD_DAYS = 2
_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")
#: How long a DROP waits for a writer's transaction before giving up until the next run.
LOCK_TIMEOUT = "30s"


@dataclass(frozen=True)
class DayPartition:
    table: str  # the partitioned serving table
    name: str  # the partition
    day: date
    rows_estimate: int  # the planner's estimate (-1: never analysed)


def day_partitions(dsn: str, table: str) -> list[DayPartition]:
    """The day partitions of ``table``, oldest first."""
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT c.relname, c.reltuples::bigint FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
                (table,),
            )
            found = cur.fetchall()
    finally:
        conn.close()
    parts = []
    for name, rows in found:
        m = _NAME.match(name)
        if m and m["table"] == table:
            day = datetime.strptime(m["day"], "%Y%m%d").date()
            parts.append(DayPartition(table, name, day, int(rows)))
    return sorted(parts, key=lambda p: p.day)


def ensure_ahead(dsn: str, today: date | None = None, ahead: int = AHEAD_DAYS) -> int:
    """Make the partitions of today and the next ``ahead`` days; returns how many were new."""
    first = today or datetime.now(UTC).date()
    days = [first + timedelta(days=n) for n in range(ahead + 1)]
    made = 0
    conn = connect(dsn)
    try:
        for table in DAY_PARTITIONED:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT serving_ensure_days(%s::regclass, %s::date[])", (table, days))
                made += cur.fetchone()[0]
    finally:
        conn.close()
    if made:
        log.info("serving partitions made ahead=%d days new=%d", ahead, made)
    return made


def expired(parts: list[DayPartition], retention_days: int, today: date) -> list[DayPartition]:
    """The partitions wholly older than ``retention_days`` before ``today`` (0: none)."""
    if retention_days <= 0:
        return []
    cutoff = today - timedelta(days=retention_days)
    return [p for p in parts if p.day < cutoff]


def drop_expired(
    dsn: str, retention_days: int, today: date | None = None, dry_run: bool = False
) -> list[DayPartition]:
    """Drop every serving partition older than the retention (``expired``); returns what
    was (in a dry run: would be) dropped."""
    day = today or datetime.now(UTC).date()
    doomed = [
        p for t in DAY_PARTITIONED for p in expired(day_partitions(dsn, t), retention_days, day)
    ]
    if not dry_run:
        drop_partitions(dsn, doomed, f"retention_days={retention_days}")
    return doomed


def drop_partitions(dsn: str, parts: list[DayPartition], why: str) -> None:
    """``DROP TABLE`` each partition in a short transaction of its own (waiting at most
    ``LOCK_TIMEOUT`` for a writer), logging its day and row estimate."""
    if not parts:
        return
    conn = connect(dsn)
    try:
        for p in parts:
            with conn, conn.cursor() as cur:
                cur.execute("SET LOCAL lock_timeout = %s", (LOCK_TIMEOUT,))
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(p.name)))
            log.info(
                "serving partition dropped table=%s day=%s rows_estimate=%d %s",
                p.table, p.day.isoformat(), p.rows_estimate, why,
            )  # fmt: skip
    finally:
        conn.close()


#: How often ``cryptoflow up`` applies the retention while it runs.
PERIOD_S = 3600.0


def start_periodic(dsn: str, retention_days: int, period_s: float = PERIOD_S) -> bool:
    """In ``cryptoflow up``: a daemon thread that makes the next days' partitions and drops
    the expired ones every ``period_s`` (first at once); nothing when retention is off
    (0). A failed round (PostgreSQL down) is one log line, retried next round. Returns
    whether it started."""
    if retention_days <= 0:
        return False

    def loop() -> None:
        while True:
            try:
                ensure_ahead(dsn)
                drop_expired(dsn, retention_days)
            except Exception as e:  # noqa: BLE001 (housekeeping never stops the pipeline)
                log.warning("serving retention round failed: %s", first_line(e))
            time.sleep(period_s)

    threading.Thread(target=loop, name="serving-retention", daemon=True).start()
    log.info("serving retention every %.0f s: days older than %d dropped", period_s,
             retention_days)  # fmt: skip
    return True
