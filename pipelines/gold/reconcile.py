"""Reconciliation: our closed 1 m candles against the exchange's closed 1 m klines.

``reconcile`` runs in the batch's serving transaction, after the batch upserted
``exchange_klines`` and folded its trades (``pipelines.gold.fold.fold_batch``). It checks
the minutes the batch touched (1 m candles its new trades went into, closed 1 m klines it
brought) and the minutes that just became final, and upserts one ``reconciliation`` row per
minute it can decide (sql/081_reconciliation.sql, docs/gold.md "Reconciliation"):

- ``match`` / ``mismatch``: both sides have the minute; ``differences`` names every field
  that differs with both values, ``{"high": {"ours": "...", "exchange": "..."}}``;
- ``missing_ours``: the exchange's kline counts trades, we have no candle (an exchange kline
  of 0 trades and no candle of ours is a ``match``);
- ``missing_exchange``: our minute is final (it ends at least ``watermark + grace`` before
  the newest 1 m candle of the lake) and no closed exchange kline arrived. A minute of ours
  that is not final and has no exchange kline yet is left undecided (no row).

Fields compared: ``FIELDS``. The exchange gives quote volumes with 8 decimals: ours (exact,
up to 16) rounded half-even to 8 decimals must equal theirs; every other field is compared
exactly, by value. A first / last trade id of -1 (klines from REST or CSV) is unknown and
not compared.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import psycopg2.extensions
import pyarrow as pa
from psycopg2 import sql

from pipelines.gold.candles import MINUTE
from pipelines.gold.fold import fetch_dicts

#: The fields compared, in Binance's order.
FIELDS = (
    "open", "high", "low", "close", "volume", "quote_volume", "trades", "taker_buy_volume",
    "taker_buy_quote_volume", "first_trade_id", "last_trade_id",
)  # fmt: skip
#: Ours rounded half-even to ``EXCHANGE_PLACES`` decimals before comparing.
ROUNDED = ("quote_volume", "taker_buy_quote_volume")
EXCHANGE_PLACES = Decimal("1E-8")
#: Not compared when the exchange's value is ``UNKNOWN_ID`` (REST / CSV klines).
IDS = ("first_trade_id", "last_trade_id")
UNKNOWN_ID = -1
#: How long after watermark a minute of ours waits for the exchange's kline.
GRACE_SECONDS = 60
#: How far back a batch looks for minutes that became final without a check.
LOOKBACK = timedelta(hours=1)
STATUSES = ("match", "mismatch", "missing_exchange", "missing_ours")
_MINUTE = timedelta(minutes=1)


def kline_minutes(klines: pa.Table | Iterable[Mapping[str, Any]]) -> list[tuple[str, datetime]]:
    """(symbol, open_time) of the closed 1 m klines among ``klines`` (rows or a table with
    symbol, interval, open_time, is_closed): the exchange's minutes a batch brought."""
    rows = klines.to_pylist() if isinstance(klines, pa.Table) else klines
    return [
        (r["symbol"], _utc(r["open_time"]))
        for r in rows
        if r["interval"] == MINUTE and r["is_closed"]
    ]


def _utc(ts: datetime) -> datetime:
    """An aware datetime; a naive one (an Arrow timestamp without zone) is UTC."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _text(value: Any) -> str:
    return str(value)


def verdict(ours: Mapping[str, Any] | None, theirs: Mapping[str, Any] | None) -> tuple[str, dict]:
    """(status, differences) of one minute from our candle and the exchange's closed kline
    (``None``: absent). Both absent, or only ours: ``missing_exchange`` (the caller decides
    whether the minute is final)."""
    if theirs is None:
        return "missing_exchange", {}
    if ours is None:
        return ("match", {}) if theirs["trades"] == 0 else ("missing_ours", {})
    differences = {}
    for name in FIELDS:
        mine, other = ours[name], theirs[name]
        if name in IDS and other == UNKNOWN_ID:
            continue
        if name in ROUNDED:
            mine = Decimal(mine).quantize(EXCHANGE_PLACES, rounding=ROUND_HALF_EVEN)
        if mine != other:
            differences[name] = {"ours": _text(mine), "exchange": _text(other)}
    return ("mismatch" if differences else "match"), differences


def _columns(alias: str) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{}.{} AS {}").format(
            sql.Identifier(alias), sql.Identifier(f), sql.Identifier(f"{alias}_{f}")
        )
        for f in FIELDS
    )


def _final_before(cur: psycopg2.extensions.cursor, lake: str, wait: timedelta) -> datetime | None:
    """Minutes ending at or before this are final: the newest 1 m candle's start - ``wait``."""
    cur.execute(
        'SELECT max(open_time) FROM candles WHERE lake = %s AND "interval" = %s', (lake, MINUTE)
    )
    (newest,) = cur.fetchone()
    return None if newest is None else newest - wait


def _unchecked_final(
    cur: psycopg2.extensions.cursor, lake: str, final_before: datetime
) -> list[tuple[str, datetime]]:
    """Our final minutes of the last ``LOOKBACK`` that have no reconciliation row yet."""
    cur.execute(
        "SELECT c.symbol, c.open_time FROM candles c"
        ' WHERE c.lake = %(lake)s AND c."interval" = %(minute)s'
        " AND c.open_time >= %(since)s AND c.open_time + INTERVAL '1 minute' <= %(final)s"
        " AND NOT EXISTS (SELECT 1 FROM reconciliation r"
        " WHERE r.symbol = c.symbol AND r.minute = c.open_time)",
        {"lake": lake, "minute": MINUTE, "since": final_before - LOOKBACK, "final": final_before},
    )
    return [(s, t) for s, t in cur.fetchall()]


def reconcile(
    cur: psycopg2.extensions.cursor,
    lake: str,
    minutes: Iterable[tuple[str, datetime]],
    watermark_seconds: int,
    grace_seconds: int = GRACE_SECONDS,
) -> Counter[str]:
    """Reconcile ``minutes`` ((symbol, minute start): ``Folded.minutes`` plus
    ``kline_minutes`` of the batch's klines) and ``lake``'s minutes that became final
    unchecked; upsert their ``reconciliation`` rows. Returns how many minutes got each
    status. Runs inside the caller's transaction (module doc)."""
    final_before = _final_before(cur, lake, timedelta(seconds=watermark_seconds + grace_seconds))
    wanted = set(minutes)
    if final_before is not None:
        wanted |= set(_unchecked_final(cur, lake, final_before))
    if not wanted:
        return Counter()
    keys = sorted(wanted)
    cur.execute(
        sql.SQL(
            "SELECT k.symbol, k.minute, c.symbol IS NOT NULL AS ours,"
            " e.symbol IS NOT NULL AS theirs, {c}, {e}"
            " FROM unnest(%(symbols)s::text[], %(minutes)s::timestamptz[]) AS k(symbol, minute)"
            ' LEFT JOIN candles c ON c.symbol = k.symbol AND c."interval" = %(minute)s'
            " AND c.open_time = k.minute"
            ' LEFT JOIN exchange_klines e ON e.symbol = k.symbol AND e."interval" = %(minute)s'
            " AND e.open_time = k.minute AND e.is_closed"
        ).format(c=_columns("c"), e=_columns("e")),
        {"symbols": [k[0] for k in keys], "minutes": [k[1] for k in keys], "minute": MINUTE},
    )
    decided: list[tuple[str, datetime, str, str]] = []
    for row in fetch_dicts(cur):
        ours = {f: row[f"c_{f}"] for f in FIELDS} if row["ours"] else None
        theirs = {f: row[f"e_{f}"] for f in FIELDS} if row["theirs"] else None
        if ours is None and theirs is None:
            continue  # nothing to compare (a minute named by a caller that holds neither)
        status, differences = verdict(ours, theirs)
        final = final_before is not None and row["minute"] + _MINUTE <= final_before
        if status == "missing_exchange" and not final:
            continue  # the exchange's kline may still come
        decided.append((row["symbol"], row["minute"], status, json.dumps(differences)))
    if decided:
        cur.execute(
            "INSERT INTO reconciliation AS r (symbol, minute, status, differences, lake)"
            " SELECT s, m, st, d::jsonb, %(lake)s FROM"
            " unnest(%(s)s::text[], %(m)s::timestamptz[], %(st)s::text[], %(d)s::text[])"
            " AS x(s, m, st, d)"
            " ON CONFLICT (symbol, minute) DO UPDATE SET status = EXCLUDED.status,"
            " differences = EXCLUDED.differences, checked_at = now(), lake = EXCLUDED.lake,"
            " change_seq = nextval('reconciliation_change_seq')",
            {
                "lake": lake,
                **{k: [d[i] for d in decided] for i, k in enumerate(("s", "m", "st", "d"))},
            },
        )
    return Counter(d[2] for d in decided)
