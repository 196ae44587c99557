"""Candles (klines) from trades, Binance's definition, folded like the metrics.

``settings.candle_intervals`` ("1s,1m,5m,1h") names the intervals; each candle is one
(symbol, interval, open_time) of the epoch-aligned windows ``date_bin(interval, trade_time,
epoch)``, with close_time = open_time + interval - 1 ms. Over the trades of the window:
open / close = price of the trade with the lowest / highest trade id (not the earliest time),
high / low, volume Σq, quote_volume Σp·q (exact), trades = count, taker_buy_volume Σq and
taker_buy_quote_volume Σp·q where ``is_buyer_maker`` is false, first / last trade id = min /
max trade id.

``candle_cte`` is the part of the fold statement (``pipelines.gold.fold``) that adds the
trades a batch inserted to their candles: sums and counts add up, high / low keep the
greatest / least, and open with first_trade_id (close with last_trade_id) are replaced
together when the new trades hold a lower (higher) id, so a late trade corrects its candle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg2 import sql

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ConfigError

#: The PostgreSQL ``candles`` columns (sql/080_candles.sql) a candle is made of, in order.
CANDLE_COLUMNS = (
    "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close", "volume",
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume", "first_trade_id",
    "last_trade_id",
)  # fmt: skip
#: The interval reconciliation compares with the exchange's klines.
MINUTE = "1m"
_UNITS = {"s": 1, "m": 60, "h": 3600}
_INTERVAL = re.compile(r"^\s*(\d+)\s*([smh])\s*$")


@dataclass(frozen=True)
class CandleInterval:
    """One candle interval: Binance's name for it ("1s", "5m", "1h") and its length."""

    name: str
    seconds: int


def interval_name(seconds: int) -> str:
    """Binance's name of a length: the largest unit that divides it (60 s is "1m")."""
    for unit in ("h", "m", "s"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    raise AssertionError("every length is a whole number of seconds")


def parse_intervals(text: str) -> tuple[CandleInterval, ...]:
    """``"1s,1m,5m,1h"`` as intervals, shortest first; a bad item (unit other than s, m, h,
    a length of 0, two items of one length) is a ``ConfigError``."""
    found: dict[int, CandleInterval] = {}
    for item in (i for i in text.split(",") if i.strip()):
        m = _INTERVAL.match(item)
        seconds = int(m.group(1)) * _UNITS[m.group(2)] if m else 0
        if not seconds:
            raise ConfigError(
                f"CRYPTOFLOW_CANDLE_INTERVALS: bad interval {item.strip()!r}: a positive whole "
                "number and a unit s, m or h, as 1s, 1m, 5m, 1h"
            )
        name = interval_name(seconds)
        if seconds in found:
            raise ConfigError(
                f"CRYPTOFLOW_CANDLE_INTERVALS: {item.strip()!r} repeats {found[seconds].name}"
            )
        found[seconds] = CandleInterval(name, seconds)
    return tuple(found[s] for s in sorted(found))


def reconciling(settings: Settings) -> bool:
    """Whether the batches reconcile candles with the exchange's klines: kline_1m is among
    the stream kinds."""
    return any(k.name == "kline_1m" for k in settings.stream_kinds)


def candle_intervals(settings: Settings) -> tuple[CandleInterval, ...]:
    """The intervals the fold computes: ``settings.candle_intervals``, plus 1m when
    reconciling (its candles are what is compared)."""
    chosen = parse_intervals(settings.candle_intervals)
    if reconciling(settings) and all(i.name != MINUTE for i in chosen):
        chosen = tuple(sorted((*chosen, CandleInterval(MINUTE, 60)), key=lambda i: i.seconds))
    return chosen


def candle_cte() -> sql.Composed:
    """``c AS (INSERT INTO candles ... RETURNING symbol, interval, open_time)``: the candles of
    the trades in CTE ``n`` (symbol, trade_id, price, quantity, is_buyer_maker, trade_time),
    upserted. Parameters: ``candle_seconds`` (int[]), ``candle_names`` (text[]), ``lake``,
    ``epoch``."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in (*CANDLE_COLUMNS, "lake", "change_seq"))
    merge = [
        "open = CASE WHEN EXCLUDED.first_trade_id < c.first_trade_id "
        "THEN EXCLUDED.open ELSE c.open END",
        "first_trade_id = LEAST(c.first_trade_id, EXCLUDED.first_trade_id)",
        "close = CASE WHEN EXCLUDED.last_trade_id > c.last_trade_id "
        "THEN EXCLUDED.close ELSE c.close END",
        "last_trade_id = GREATEST(c.last_trade_id, EXCLUDED.last_trade_id)",
        "high = GREATEST(c.high, EXCLUDED.high)",
        "low = LEAST(c.low, EXCLUDED.low)",
        *(
            f"{c} = c.{c} + EXCLUDED.{c}"
            for c in (
                "volume",
                "quote_volume",
                "trades",
                "taker_buy_volume",
                "taker_buy_quote_volume",
            )
        ),  # fmt: skip
        "lake = EXCLUDED.lake, change_seq = EXCLUDED.change_seq",
    ]
    return sql.SQL(
        "c AS ("
        " INSERT INTO candles AS c ({cols})"
        " SELECT n.symbol, ci.name,"
        " date_bin(make_interval(secs => ci.seconds), n.trade_time, %(epoch)s),"
        " date_bin(make_interval(secs => ci.seconds), n.trade_time, %(epoch)s)"
        " + make_interval(secs => ci.seconds) - INTERVAL '1 millisecond',"
        " (array_agg(n.price ORDER BY n.trade_id))[1], max(n.price), min(n.price),"
        " (array_agg(n.price ORDER BY n.trade_id DESC))[1],"
        " sum(n.quantity), sum(n.price * n.quantity), count(*),"
        # m false: the taker bought (Binance's V and Q)
        " coalesce(sum(n.quantity) FILTER (WHERE NOT n.is_buyer_maker), 0),"
        " coalesce(sum(n.price * n.quantity) FILTER (WHERE NOT n.is_buyer_maker), 0),"
        " min(n.trade_id), max(n.trade_id), %(lake)s, nextval('candle_change_seq')"
        " FROM n CROSS JOIN unnest(%(candle_seconds)s::int[], %(candle_names)s::text[])"
        " AS ci(seconds, name)"
        " GROUP BY n.symbol, ci.name, ci.seconds, 3"
        ' ON CONFLICT (symbol, "interval", open_time) DO UPDATE SET {merge}'
        ' RETURNING c.symbol, c."interval", c.open_time)'
    ).format(cols=cols, merge=sql.SQL(", ").join(sql.SQL(m) for m in merge))


def candle_params(intervals: tuple[CandleInterval, ...] | list[CandleInterval]) -> dict:
    """``candle_cte``'s interval parameters."""
    return {
        "candle_seconds": [i.seconds for i in intervals],
        "candle_names": [i.name for i in intervals],
    }
