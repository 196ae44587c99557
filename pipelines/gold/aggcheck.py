"""Aggregate trades reconciled with trades, in the batch's serving transaction.

An aggregate (``agg_trades``, Binance ``@aggTrade``) covers the trades first..last of one
taker order at one price: once all of them are in ``raw_trades``, each must have the
aggregate's price and taker side, and their quantities must sum to its quantity.
``check_aggregates`` checks the aggregates a batch touched (those it upserted, and those
covering the trades it inserted) whose trades are all present; an aggregate with a trade
still missing is checked when that trade arrives (its batch touches it). Failures are
upserted into ``agg_reconciliation`` (sql/081_reconciliation.sql) with the differing fields
and both values; a row that passes a later check is set back to ``match``. Passing checks
leave no row (there is one aggregate every few trades).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg2.extensions

from pipelines.gold.fold import fetch_dicts

#: The aggregates a batch touched with all their trades present, and what those trades say.
_CHECK = """
WITH by_id AS (
    SELECT a.* FROM unnest(%(agg_symbols)s::text[], %(agg_ids)s::bigint[]) AS k(symbol, id)
    JOIN agg_trades a ON a.symbol = k.symbol AND a.agg_trade_id = k.id
), by_trade AS (
    -- aggregate ids grow with trade ids: the ones covering lo..hi lie between the first
    -- aggregate ending at or after lo and the first ending at or after hi (else the last)
    SELECT a.* FROM unnest(%(range_symbols)s::text[], %(los)s::bigint[], %(his)s::bigint[])
         AS r(symbol, lo, hi)
    CROSS JOIN LATERAL (SELECT agg_trade_id AS id FROM agg_trades
                        WHERE symbol = r.symbol AND last_trade_id >= r.lo
                        ORDER BY last_trade_id LIMIT 1) f
    CROSS JOIN LATERAL (SELECT coalesce(
        (SELECT agg_trade_id FROM agg_trades WHERE symbol = r.symbol AND last_trade_id >= r.hi
         ORDER BY last_trade_id LIMIT 1),
        (SELECT max(agg_trade_id) FROM agg_trades WHERE symbol = r.symbol)) AS id) l
    JOIN agg_trades a ON a.symbol = r.symbol AND a.agg_trade_id BETWEEN f.id AND l.id
    WHERE a.last_trade_id >= r.lo AND a.first_trade_id <= r.hi
), touched AS (
    SELECT symbol, agg_trade_id, price, quantity, first_trade_id, last_trade_id, is_buyer_maker,
           trade_time
    FROM by_id
    UNION
    SELECT symbol, agg_trade_id, price, quantity, first_trade_id, last_trade_id, is_buyer_maker,
           trade_time
    FROM by_trade
)
SELECT a.symbol, a.agg_trade_id, a.first_trade_id, a.last_trade_id, a.price, a.quantity,
       a.is_buyer_maker, min(t.price) AS min_price, max(t.price) AS max_price,
       sum(t.quantity) AS sum_quantity, bool_and(t.is_buyer_maker) AS all_maker,
       bool_or(t.is_buyer_maker) AS any_maker
FROM touched a
JOIN raw_trades t ON t.symbol = a.symbol
                 AND t.trade_id BETWEEN a.first_trade_id AND a.last_trade_id
                 -- an aggregate's trades fill one taker order at its time: the bound lets
                 -- each probe read the day partitions around it, not every day's index
                 AND t.trade_time BETWEEN a.trade_time - interval '1 day'
                                      AND a.trade_time + interval '1 day'
GROUP BY 1, 2, 3, 4, 5, 6, 7
HAVING count(*) = a.last_trade_id - a.first_trade_id + 1
"""


def differences(row: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The fields where an aggregate and its trades disagree: price (every trade at the
    aggregate's price), quantity (Σ of the trades'), is_buyer_maker (every trade's side)."""
    out: dict[str, dict[str, str]] = {}
    low, high = row["min_price"], row["max_price"]
    if low != row["price"] or high != row["price"]:
        ours = str(low) if low == high else f"{low}..{high}"
        out["price"] = {"ours": ours, "exchange": str(row["price"])}
    if row["sum_quantity"] != row["quantity"]:
        out["quantity"] = {"ours": str(row["sum_quantity"]), "exchange": str(row["quantity"])}
    side = "mixed" if row["all_maker"] != row["any_maker"] else str(row["all_maker"]).lower()
    if side != str(row["is_buyer_maker"]).lower():
        out["is_buyer_maker"] = {"ours": side, "exchange": str(row["is_buyer_maker"]).lower()}
    return out


def check_aggregates(
    cur: psycopg2.extensions.cursor,
    aggregates: Iterable[tuple[str, int]] = (),
    trade_ranges: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, int]:
    """Check the aggregates ``aggregates`` ((symbol, agg_trade_id) the batch upserted) and
    those covering ``trade_ranges`` ({symbol: (lowest, highest) trade id inserted}:
    ``Folded.trade_ranges``), where all their trades are present (module doc). Returns
    ``{"checked": n, "mismatch": m}``. Runs inside the caller's transaction."""
    aggs = sorted(set(aggregates))
    ranges = sorted((trade_ranges or {}).items())
    if not aggs and not ranges:
        return {"checked": 0, "mismatch": 0}
    cur.execute(
        _CHECK,
        {
            "agg_symbols": [a[0] for a in aggs],
            "agg_ids": [a[1] for a in aggs],
            "range_symbols": [s for s, _ in ranges],
            "los": [r[0] for _, r in ranges],
            "his": [r[1] for _, r in ranges],
        },
    )
    rows = fetch_dicts(cur)
    bad = [(r, differences(r)) for r in rows]
    failed = [(r, d) for r, d in bad if d]
    passed = [r for r, d in bad if not d]
    if failed:
        cur.execute(
            "INSERT INTO agg_reconciliation (symbol, agg_trade_id, first_trade_id,"
            " last_trade_id, status, differences)"
            " SELECT s, i, f, l, 'mismatch', d::jsonb FROM unnest(%s::text[], %s::bigint[],"
            " %s::bigint[], %s::bigint[], %s::text[]) AS x(s, i, f, l, d)"
            " ON CONFLICT (symbol, agg_trade_id) DO UPDATE SET status = 'mismatch',"
            " first_trade_id = EXCLUDED.first_trade_id, last_trade_id = EXCLUDED.last_trade_id,"
            " differences = EXCLUDED.differences, checked_at = now()",
            tuple(
                map(list, zip(*[
                    (r["symbol"], r["agg_trade_id"], r["first_trade_id"], r["last_trade_id"],
                     json.dumps(d)) for r, d in failed
                ], strict=True))
            ),
        )  # fmt: skip
    if passed:
        cur.execute(
            "UPDATE agg_reconciliation a SET status = 'match', differences = '{}',"
            " checked_at = now() FROM unnest(%s::text[], %s::bigint[]) AS x(s, i)"
            " WHERE a.symbol = x.s AND a.agg_trade_id = x.i AND a.status <> 'match'",
            ([r["symbol"] for r in passed], [r["agg_trade_id"] for r in passed]),
        )
    return {"checked": len(rows), "mismatch": len(failed)}
