"""Reading the reconciliation tables (``cryptoflow reconcile``, ``cryptoflow status``).

The rows come from ``pipelines.gold.reconcile`` (minutes: our 1 m candles against the
exchange's klines) and ``pipelines.gold.aggcheck`` (aggregate trades against trades).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2.extensions

from cryptoflow.core.errors import ConfigError
from pipelines.gold.reconcile import FIELDS, STATUSES

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90s``, ``30m``, ``2h``, ``1d``) or an ISO
    timestamp (UTC unless it names its zone); anything else is a ``ConfigError``."""
    now = now or datetime.now(UTC)
    m = _DURATION.match(text.strip())
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected a duration (90s, 30m, 2h, 1d) or an ISO timestamp "
            "(2026-01-01T12:00 or 2026-01-01 12:00:00+00:00)"
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _scope(since: datetime, symbols: Sequence[str]) -> tuple[str, dict[str, Any]]:
    where = "minute >= %(since)s"
    if symbols:
        where += " AND symbol = ANY(%(symbols)s)"
    return where, {"since": since, "symbols": list(symbols)}


def summary(
    cur: psycopg2.extensions.cursor, since: datetime, symbols: Sequence[str] = ()
) -> dict[str, int]:
    """Minutes per status since ``since`` (every status, 0 when none), and
    ``agg_mismatch``: aggregates checked since then that disagree with their trades."""
    where, params = _scope(since, symbols)
    cur.execute(f"SELECT status, count(*) FROM reconciliation WHERE {where} GROUP BY 1", params)
    counts = dict.fromkeys(STATUSES, 0) | {s: int(n) for s, n in cur.fetchall()}
    agg_where = "checked_at >= %(since)s AND status = 'mismatch'"
    if symbols:
        agg_where += " AND symbol = ANY(%(symbols)s)"
    cur.execute(f"SELECT count(*) FROM agg_reconciliation WHERE {agg_where}", params)
    counts["agg_mismatch"] = int(cur.fetchone()[0])
    return counts


def minutes(
    cur: psycopg2.extensions.cursor,
    since: datetime,
    symbols: Sequence[str] = (),
    status: str | None = None,
) -> list[dict[str, Any]]:
    """The reconciliation rows since ``since``, oldest minute first (symbol, minute, status,
    differences as a dict, checked_at)."""
    where, params = _scope(since, symbols)
    if status is not None:
        where += " AND status = %(status)s"
        params["status"] = status
    cur.execute(
        "SELECT symbol, minute, status, differences, checked_at FROM reconciliation"
        f" WHERE {where} ORDER BY minute, symbol",
        params,
    )
    names = ("symbol", "minute", "status", "differences", "checked_at")
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def aggregates(
    cur: psycopg2.extensions.cursor, since: datetime, symbols: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The aggregates checked since ``since`` that disagree with their trades."""
    where = "checked_at >= %(since)s AND status = 'mismatch'"
    if symbols:
        where += " AND symbol = ANY(%(symbols)s)"
    cur.execute(
        "SELECT symbol, agg_trade_id, first_trade_id, last_trade_id, differences, checked_at"
        f" FROM agg_reconciliation WHERE {where} ORDER BY symbol, agg_trade_id",
        {"since": since, "symbols": list(symbols)},
    )
    names = ("symbol", "agg_trade_id", "first_trade_id", "last_trade_id", "differences",
             "checked_at")  # fmt: skip
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def describe(differences: dict[str, dict[str, str]]) -> str:
    """``high ours=1 exchange=2; trades ours=3 exchange=4``, fields in Binance's order."""
    order = {f: i for i, f in enumerate(FIELDS)}
    names = sorted(differences, key=lambda f: (order.get(f, len(order)), f))
    return "; ".join(
        f"{f} ours={differences[f]['ours']} exchange={differences[f]['exchange']}" for f in names
    )


def summary_line(counts: dict[str, int]) -> str:
    """``12 minutes: 10 match, 1 mismatch, 1 missing_exchange, 0 missing_ours; 0 aggregate
    mismatches``."""
    total = sum(counts[s] for s in STATUSES)
    parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES)
    return f"{total} minutes: {parts}; {counts['agg_mismatch']} aggregate mismatches"


def all_match(counts: dict[str, int]) -> bool:
    """No minute other than ``match`` and no aggregate mismatch."""
    return not counts["agg_mismatch"] and all(counts[s] == 0 for s in STATUSES[1:])
