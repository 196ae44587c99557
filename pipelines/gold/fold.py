"""Gold's incremental fold: a batch's new trades into exact per-window sums, in PostgreSQL.

One statement per micro-batch, inside the batch's serving transaction: the staged trades
are inserted into ``raw_trades`` (``ON CONFLICT DO NOTHING``) and exactly the rows that
were inserted are grouped by (symbol, window length, window start) and added to
``metric_sums`` (sql/060_metric_sums.sql). A trade is therefore folded once, the moment it
enters raw_trades, whatever the batch, the replay or the lateness: ``metrics`` always counts
exactly the trades raw_trades holds. The touched sums come back from the same statement and
``finish`` (exact fractions, rounded half-even once) derives their ``metrics`` rows, upserted
in the same transaction.

The same statement folds those rows into their candles (``pipelines.gold.candles``): one
CTE inserts the trades, and both folds read exactly its rows. ``fold_batch`` returns what
the batch's later steps need: the metrics rows, the 1 m candles touched (the minutes to
reconcile, ``pipelines.gold.reconcile``) and the range of trade ids inserted per symbol (the
aggregates to check against their trades).

PostgreSQL's ``numeric`` is exact, so the sums carry every digit; windows are
``date_bin(length, trade_time, epoch)``, the epoch-aligned tumbling windows of Spark's
``window()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from pipelines.gold.candles import MINUTE, CandleInterval, candle_cte, candle_params
from pipelines.gold.transform import LATENCIES, METRIC_COLUMNS, finish
from pipelines.serving import UpsertSpec, copy_upsert

METRICS_SPEC = UpsertSpec(
    "metrics", METRIC_COLUMNS, ("symbol", "window_start", "window_end"), update=True
)
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")

#: metric_sums columns a fold adds to (``+``), then those it keeps the least / greatest of.
ADDED = (
    "trade_count", "sum_price", "sum_price_sq", "sum_notional", "total_volume",
    "buy_volume", "sell_volume",
    *(f"{kind}_{name}" for name in LATENCIES for kind in ("sum", "count")),
)  # fmt: skip
LEAST, GREATEST = ("min_price",), ("max_price", "last_trade_time")

_AGGREGATES = {
    "trade_count": "count(*)",
    "sum_price": "sum(n.price)",
    "sum_price_sq": "sum(n.price * n.price)",
    "sum_notional": "sum(n.price * n.quantity)",
    "total_volume": "sum(n.quantity)",
    # m false: the taker bought; m true: the taker sold (DESIGN.md)
    "buy_volume": "coalesce(sum(n.quantity) FILTER (WHERE NOT n.is_buyer_maker), 0)",
    "sell_volume": "coalesce(sum(n.quantity) FILTER (WHERE n.is_buyer_maker), 0)",
    "min_price": "min(n.price)",
    "max_price": "max(n.price)",
    "last_trade_time": "max(n.trade_time)",
    **{f"sum_{name}": f"coalesce(sum(n.{name}), 0)" for name in LATENCIES},
    **{f"count_{name}": f"count(n.{name})" for name in LATENCIES},
}


def fold_statement(columns: Sequence[str], stage: sql.Identifier) -> sql.Composed:
    """Insert the staged trades into raw_trades and fold the inserted ones into metric_sums
    and candles, returning every touched sums row with ``new_trades`` (how many it inserted),
    ``minute_symbols`` / ``minute_starts`` (the 1 m candles touched) and ``trade_ranges``
    ({symbol: [lowest, highest] trade id inserted}). Parameters: ``lengths`` (int[]), ``lake``
    (text), ``epoch`` (timestamptz), ``candle_seconds`` (int[]), ``candle_names`` (text[]),
    ``minute`` (text: the 1 m interval's name)."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    names = list(_AGGREGATES)
    merge = [sql.SQL("{0} = m.{0} + EXCLUDED.{0}").format(sql.Identifier(c)) for c in ADDED]
    merge += [sql.SQL("{0} = LEAST(m.{0}, EXCLUDED.{0})").format(sql.Identifier(c)) for c in LEAST]
    merge += [
        sql.SQL("{0} = GREATEST(m.{0}, EXCLUDED.{0})").format(sql.Identifier(c)) for c in GREATEST
    ]
    merge += [sql.SQL("lake = EXCLUDED.lake, change_seq = EXCLUDED.change_seq")]
    return sql.SQL(
        "WITH n AS ("
        " INSERT INTO raw_trades ({cols}) SELECT {cols} FROM {stage}"
        " ON CONFLICT (symbol, trade_id, trade_time) DO NOTHING"
        " RETURNING symbol, trade_id, price, quantity, is_buyer_maker, trade_time, {latencies}),"
        " {candles}"
        " INSERT INTO metric_sums AS m (symbol, window_seconds, window_start, {names},"
        " lake, change_seq)"
        " SELECT n.symbol, l.seconds,"
        " date_bin(make_interval(secs => l.seconds), n.trade_time, %(epoch)s), {aggregates},"
        " %(lake)s, nextval('metric_change_seq')"
        " FROM n CROSS JOIN unnest(%(lengths)s::int[]) AS l(seconds)"
        " GROUP BY n.symbol, l.seconds, 3"
        " ON CONFLICT (symbol, window_seconds, window_start) DO UPDATE SET {merge}"
        " RETURNING m.*, (SELECT count(*) FROM n) AS new_trades,"
        " (SELECT array_agg(symbol ORDER BY symbol, open_time) FROM c"
        ' WHERE "interval" = %(minute)s) AS minute_symbols,'
        " (SELECT array_agg(open_time ORDER BY symbol, open_time) FROM c"
        ' WHERE "interval" = %(minute)s) AS minute_starts,'
        " (SELECT jsonb_object_agg(symbol, jsonb_build_array(lo, hi)) FROM"
        " (SELECT symbol, min(trade_id) AS lo, max(trade_id) AS hi FROM n GROUP BY symbol) r)"
        " AS trade_ranges"
    ).format(
        candles=candle_cte(),
        cols=cols,
        stage=stage,
        latencies=sql.SQL(", ").join(sql.Identifier(n) for n in LATENCIES),
        names=sql.SQL(", ").join(sql.Identifier(n) for n in names),
        aggregates=sql.SQL(", ").join(sql.SQL(_AGGREGATES[n]) for n in names),
        merge=sql.SQL(", ").join(merge),
    )


def as_window_sums(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``metric_sums`` row in the shape ``finish`` takes (``window_sums``' columns)."""
    sums = dict(row)
    sums["window_start_us"] = micros(row["window_start"])
    sums["last_trade_us"] = micros(row["last_trade_time"])
    return sums


def micros(ts: datetime) -> int:
    """An aware datetime as microseconds since the epoch, exactly."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def fetch_dicts(cur: psycopg2.extensions.cursor) -> list[dict[str, Any]]:
    """The cursor's remaining rows as dicts keyed by column name."""
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@dataclass(frozen=True)
class Folded:
    """What a batch's fold did: ``trades`` inserted, the ``windows``' gold rows (``finish``),
    the 1 m candles touched as (symbol, open_time) ``minutes``, and per symbol the lowest and
    highest trade id inserted (``trade_ranges``)."""

    trades: int = 0
    windows: list[dict[str, Any]] = field(default_factory=list)
    minutes: list[tuple[str, datetime]] = field(default_factory=list)
    trade_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)


def fold_batch(
    cur: psycopg2.extensions.cursor,
    columns: Sequence[str],
    stage: sql.Identifier,
    lake: str,
    lengths: Sequence[int],
    intervals: Sequence[CandleInterval] = (),
) -> Folded:
    """Insert the staged trades, fold the new ones into their windows and their candles of
    every interval in ``intervals`` (``candle_intervals(settings)``), and upsert the touched
    windows' ``metrics``. Runs inside the caller's transaction."""
    cur.execute(
        fold_statement(columns, stage),
        {"lengths": list(lengths), "lake": lake, "epoch": _EPOCH, "minute": MINUTE,
         **candle_params(list(intervals))},
    )  # fmt: skip
    touched = fetch_dicts(cur)
    if not touched:
        return Folded()
    gold = [finish(as_window_sums(r)) for r in touched]
    copy_upsert(cur, METRICS_SPEC, [tuple(r[c] for c in METRIC_COLUMNS) for r in gold])
    first = touched[0]
    minutes = list(zip(first["minute_symbols"] or [], first["minute_starts"] or [], strict=True))
    ranges = {s: (int(lo), int(hi)) for s, (lo, hi) in (first["trade_ranges"] or {}).items()}
    return Folded(first["new_trades"], gold, minutes, ranges)
