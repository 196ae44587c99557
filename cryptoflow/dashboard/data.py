"""Runs the page's queries with the read-only login and shapes rows for the charts."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extensions

from cryptoflow.core.db import connect
from cryptoflow.dashboard.queries import FRESHNESS, TABLE_EXISTS, VIEWS, View

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """What the page asks for: how far back, and the bucket/window lengths in seconds."""

    minutes: int
    window_s: int
    bucket_s: int = 5

    def params(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        return {
            "since": now - timedelta(minutes=self.minutes),
            "window_s": self.window_s,
            "bucket_s": self.bucket_s,
        }


def _number(value: Any) -> str | int | float | None:
    """Exact decimals travel as strings (the page converts only to draw them)."""
    if isinstance(value, Decimal):
        return str(value)
    return value


def shape_chart(rows: list[tuple]) -> list[dict[str, Any]]:
    """``(panel, series, t, value)`` rows -> ``[{panel, series: [{name, points}]}]``,
    keeping first-seen order; ``t`` becomes epoch milliseconds, NULL values are dropped."""
    panels: dict[str, dict[str, list]] = {}
    for panel, series, t, value in rows:
        if value is None:
            continue
        points = panels.setdefault(str(panel), {}).setdefault(str(series), [])
        points.append([int(t.timestamp() * 1000), _number(value)])
    return [
        {"panel": p, "series": [{"name": n, "points": pts} for n, pts in s.items()]}
        for p, s in panels.items()
    ]


def run_view(cur: psycopg2.extensions.cursor, v: View, params: dict[str, Any]) -> dict[str, Any]:
    """One view's JSON: its panels, or ``available: false`` when its table does not exist."""
    out: dict[str, Any] = {"name": v.name, "title": v.title, "unit": v.unit, "kind": v.kind}
    cur.execute(TABLE_EXISTS, {"table": v.table})
    if not cur.fetchone()[0]:
        return out | {"available": False, "reason": f"table {v.table} does not exist yet"}
    try:
        cur.execute(v.sql, params)
    except (psycopg2.ProgrammingError, psycopg2.DataError) as e:
        # A table whose columns differ from what the view expects: say so on the page.
        log.warning("dashboard view failed view=%s error=%s", v.name, str(e).strip())
        return out | {"available": False, "reason": f"query failed: {str(e).strip()}"}
    rows = cur.fetchall()
    if v.kind == "table":
        cols = [d.name for d in cur.description]
        body = [
            [_number(x) if not isinstance(x, datetime) else x.isoformat() for x in r] for r in rows
        ]
        return out | {"available": True, "columns": cols, "rows": body}
    return out | {"available": True, "panels": shape_chart(rows)}


class Source:
    """One read-only connection shared by the server's threads, reopened after a failure."""

    def __init__(self, dsn: str, window: Window):
        self._dsn = dsn
        self.window = window
        self._conn: psycopg2.extensions.connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, application_name="cryptoflow-dashboard")
            self._conn.set_session(readonly=True, autocommit=True)
        return self._conn

    def snapshot(self) -> dict[str, Any]:
        """Every view plus freshness figures, from one consistent moment."""
        t0 = time.monotonic()
        params = self.window.params()
        with self._lock:
            try:
                with self._connection().cursor() as cur:
                    views = [run_view(cur, v, params) for v in VIEWS]
                    cur.execute(FRESHNESS, params)
                    last_trade, last_window, trades = cur.fetchone()
            except psycopg2.Error:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise
        ms = (time.monotonic() - t0) * 1000
        log.debug("dashboard snapshot views=%d query_ms=%.1f", len(views), ms)
        return {
            "generated_at": datetime.now(UTC).isoformat(),
            "minutes": self.window.minutes,
            "last_trade": last_trade.isoformat() if last_trade else None,
            "last_window_end": last_window.isoformat() if last_window else None,
            "trades_in_range": trades,
            "query_ms": round(ms, 1),
            "views": views,
        }

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
