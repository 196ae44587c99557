"""1-minute klines computed from the trades the simulator generated, as Binance computes them.

A kline covers the trades with ``open_ms <= T < open_ms + 60 000``: open / close = price of the
first / last trade by id, high, low, ``v`` = Σq, ``q`` = Σp·q, ``n`` = count, ``V`` / ``Q`` =
the same sums over trades whose taker bought (``m`` false), ``f`` / ``L`` first / last trade id.
A minute without trades has ``n`` 0, ``f`` = ``L`` = -1, zero volumes and
``o = h = l = c`` = the previous close. Sums are exact integers (Σp·q in 1e-16 units) and
``q`` / ``Q`` are rounded half-even to Binance's 8 decimals only when printed.

``KlineBuilder`` updates the open kline trade by trade (only for symbols whose klines are
wanted); ``klines_between`` computes closed klines from retained trades for REST with the same
code, so the stream and REST agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

from ingestion.simulator.frames import Trade
from ingestion.simulator.history import History
from ingestion.simulator.market import UNIT, SymbolSpec, format_units

MINUTE_MS = 60_000
#: Binance's kline keys in the order the fault option alters them, and the attribute of each.
FIELDS = {
    "o": "open",
    "h": "high",
    "l": "low",
    "c": "close",
    "v": "volume",
    "q": "quote_volume",
    "n": "trades",
    "V": "taker_volume",
    "Q": "taker_quote_volume",
    "f": "first_id",
    "L": "last_id",
}
KLINE_TEMPLATE = (
    '{"e":"kline","E":%d,"s":"%s","k":{"t":%d,"T":%d,"s":"%s","i":"1m","f":%d,"L":%d,'
    '"o":"%s","c":"%s","h":"%s","l":"%s","v":"%s","n":%d,"x":%s,"q":"%s","V":"%s","Q":"%s",'
    '"B":"0"}}'
)


def format_quote(units16: int) -> str:
    """A 1e-16-unit sum (Σp·q) as Binance's 8-decimal string, rounded half-even."""
    whole, rest = divmod(units16, UNIT)
    if rest > UNIT // 2 or (rest == UNIT // 2 and whole % 2):
        whole += 1
    return format_units(whole)


@dataclasses.dataclass(slots=True)
class Kline:
    """One symbol's minute. Prices and base volumes in 1e-8 units, quote volumes in 1e-16."""

    symbol: str
    open_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    quote_volume: int = 0
    trades: int = 0
    taker_volume: int = 0
    taker_quote_volume: int = 0
    first_id: int = -1
    last_id: int = -1

    @classmethod
    def empty(cls, symbol: str, open_ms: int, previous_close: int) -> Kline:
        p = previous_close
        return cls(symbol, open_ms, p, p, p, p)

    def values(self) -> dict[str, str | int]:
        """Binance's value of every key of ``FIELDS`` (decimals as 8-decimal strings)."""
        return {
            "o": format_units(self.open),
            "h": format_units(self.high),
            "l": format_units(self.low),
            "c": format_units(self.close),
            "v": format_units(self.volume),
            "q": format_quote(self.quote_volume),
            "n": self.trades,
            "V": format_units(self.taker_volume),
            "Q": format_quote(self.taker_quote_volume),
            "f": self.first_id,
            "L": self.last_id,
        }

    def times(self, micros: bool) -> tuple[int, int]:
        """Open and close time (``t``, ``T``) in ms or µs."""
        if micros:
            return self.open_ms * 1000, (self.open_ms + MINUTE_MS) * 1000 - 1
        return self.open_ms, self.open_ms + MINUTE_MS - 1

    def payload(self, event_time: int, closed: bool, micros: bool = False) -> str:
        """The ``@kline_1m`` payload (``event_time`` in the unit asked for)."""
        v = self.values()
        t, close_t = self.times(micros)
        return KLINE_TEMPLATE % (
            event_time, self.symbol, t, close_t, self.symbol, v["f"], v["L"], v["o"], v["c"],
            v["h"], v["l"], v["v"], v["n"], "true" if closed else "false", v["q"], v["V"], v["Q"],
        )  # fmt: skip

    def rest_row(self, micros: bool = False) -> list[int | str]:
        """The row of REST ``klines``."""
        v = self.values()
        t, close_t = self.times(micros)
        return [t, v["o"], v["h"], v["l"], v["c"], v["v"], close_t, v["q"], v["n"], v["V"],
                v["Q"], "0"]  # fmt: skip

    def altered(self, key: str, spec: SymbolSpec) -> Kline:
        """A copy with the field ``key`` (a key of ``FIELDS``) moved by one step of its kind:
        a tick for prices, a lot for base volumes, 1 quote unit for quote volumes, 1 for
        counts and ids."""
        step = {"o": spec.tick_units, "h": spec.tick_units, "l": spec.tick_units,
                "c": spec.tick_units, "v": spec.step_units, "V": spec.step_units,
                "q": UNIT * UNIT, "Q": UNIT * UNIT}.get(key, 1)  # fmt: skip
        attr = FIELDS[key]
        return dataclasses.replace(self, **{attr: getattr(self, attr) + step})


class KlineEvent(NamedTuple):
    """A kline as streamed at ``event_us``: open (``closed`` false) or closed."""

    kline: Kline
    event_us: int
    closed: bool

    @property
    def payload(self) -> str:
        return self.kline.payload(self.event_us // 1000, self.closed)

    @property
    def payload_us(self) -> str:
        return self.kline.payload(self.event_us, self.closed, micros=True)


class KlineBuilder:
    """The open kline of one symbol, fed with its trades in id order (``add``); returns each
    minute once it is complete (``add`` when a later trade arrives, ``close_until``)."""

    def __init__(self, symbol: str, open_ms: int, previous_close: int) -> None:
        self.symbol = symbol
        self.current = Kline.empty(symbol, open_ms, previous_close)

    def add(self, trades: Sequence[Trade]) -> list[Kline]:
        """Fold ``trades`` in; the klines they completed (empty minutes included)."""
        k = self.current
        if trades and trades[0].time < k.open_ms:
            # trades of a minute before this builder's first one only set the previous close
            early = [t for t in trades if t.time < k.open_ms]
            k.open = k.high = k.low = k.close = early[-1].price
            trades = trades[len(early) :]
        closed: list[Kline] = []
        end = k.open_ms + MINUTE_MS
        for t in trades:
            time = t.time
            if time >= end:
                closed += self._roll(time - time % MINUTE_MS)
                k = self.current
                end = k.open_ms + MINUTE_MS
            p, q = t.price, t.qty
            if k.trades:
                if p > k.high:
                    k.high = p
                elif p < k.low:
                    k.low = p
            else:
                k.open = k.high = k.low = p
                k.first_id = t.id
            k.close = p
            k.last_id = t.id
            k.trades += 1
            k.volume += q
            pq = p * q
            k.quote_volume += pq
            if not t.is_buyer_maker:
                k.taker_volume += q
                k.taker_quote_volume += pq
        return closed

    def close_until(self, horizon_ms: int) -> list[Kline]:
        """Close every minute that ends at or before ``horizon_ms`` (no trade can join it)."""
        open_ms = horizon_ms - horizon_ms % MINUTE_MS
        return self._roll(open_ms) if open_ms > self.current.open_ms else []

    def _roll(self, open_ms: int) -> list[Kline]:
        """Close the open kline and empty minutes before ``open_ms``; start ``open_ms``."""
        closed = [self.current]
        close = self.current.close
        for minute in range(self.current.open_ms + MINUTE_MS, open_ms, MINUTE_MS):
            closed.append(Kline.empty(self.symbol, minute, close))
        self.current = Kline.empty(self.symbol, open_ms, close)
        return closed


def klines_between(
    symbol: str, trades: Sequence[Trade], first_open: int, last_open: int, previous_close: int
) -> list[Kline]:
    """Closed klines of the minutes ``first_open..last_open`` from every trade of ``symbol``
    in them (``trades`` in id order; trades outside the minutes are ignored)."""
    if last_open < first_open:
        return []
    builder = KlineBuilder(symbol, first_open, previous_close)
    end = last_open + MINUTE_MS
    inside = [t for t in trades if first_open <= t.time < end]
    return builder.add(inside) + builder.close_until(end)


def previous_close(history: History[Trade], open_ms: int, spec: SymbolSpec) -> int:
    """The price of the last trade before ``open_ms`` (the spec's level before any trade)."""
    i = history.index_at(open_ms)
    return history.rows[i - 1].price if i > 0 else int(spec.base_price * UNIT)


def closed_klines(
    history: History[Trade],
    spec: SymbolSpec,
    market: tuple[int, int],
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
) -> list[Kline]:
    """REST ``klines``: closed minutes with ``start_ms <= open <= end_ms`` (the newest
    ``limit`` without ``start_ms``, else the oldest ``limit`` from it), computed from retained
    trades. ``market`` is (start of the market, horizon: every trade before it exists), in ms.
    Minutes before the market started, or whose oldest trades are no longer retained, are
    not served."""
    market_start, horizon = market
    first_open = market_start - market_start % MINUTE_MS
    oldest, lost = history.served()
    if lost:
        t = history.rows[oldest].time
        first_open = max(first_open, t - t % MINUTE_MS + MINUTE_MS)
    last_open = horizon - horizon % MINUTE_MS - MINUTE_MS
    if end_ms is not None:
        last_open = min(last_open, end_ms - end_ms % MINUTE_MS)
    if start_ms is not None:
        lo = max(first_open, -(-start_ms // MINUTE_MS) * MINUTE_MS)
        hi = min(last_open, lo + (limit - 1) * MINUTE_MS)
    else:
        hi = last_open
        lo = max(first_open, hi - (limit - 1) * MINUTE_MS)
    if hi < lo:
        return []
    rows = history.rows[history.index_at(lo) : history.index_at(hi + MINUTE_MS)]
    return klines_between(spec.symbol, rows, lo, hi, previous_close(history, lo, spec))
