"""``@bookTicker``: the best bid and ask of a symbol after each aggregate trade.

Binance's payload is ``{"u":update_id,"s":"BTCUSDT","b":"bid","B":"bid qty","a":"ask",
"A":"ask qty"}`` (no event type, no times). The simulator sends one update after each
aggregate trade (trades of one taker order at one price), so updates come at about the
trade rate. The book brackets that price: bid one tick below it, ask one tick above, and
quantities are a deterministic function of the update id (lot-sized, around a few typical
trade sizes). Update ids increase by one per symbol and never repeat across runs (``ids.py``).
"""

from __future__ import annotations

from typing import NamedTuple

from ingestion.simulator.frames import AggTrade
from ingestion.simulator.ids import IdSequence
from ingestion.simulator.market import SymbolSpec, format_units

BOOK_TEMPLATE = '{"u":%d,"s":"%s","b":"%s","B":"%s","a":"%s","A":"%s"}'
_GOLDEN = 0x9E3779B1  # multiplicative hash of the update id: quantities vary, reproducibly


class BookTicker(NamedTuple):
    """One ``@bookTicker`` update; prices and quantities in 1e-8 units."""

    symbol: str
    update_id: int
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int

    @property
    def payload(self) -> str:
        return BOOK_TEMPLATE % (
            self.update_id, self.symbol, format_units(self.bid), format_units(self.bid_qty),
            format_units(self.ask), format_units(self.ask_qty),
        )  # fmt: skip


class BookMaker:
    """The book tickers of one symbol (``after(aggs)``)."""

    def __init__(self, spec: SymbolSpec, ids: IdSequence) -> None:
        self.symbol = spec.symbol
        self.tick = spec.tick_units
        self.step = spec.step_units
        self.span = 4 * max(1, int(spec.median_qty / spec.step_size))
        self.ids = ids

    def after(self, aggs: list[AggTrade]) -> list[BookTicker]:
        """One update after each of ``aggs`` (this symbol's, in id order)."""
        out: list[BookTicker] = []
        take, tick, step, span, symbol = self.ids.take, self.tick, self.step, self.span, self.symbol
        for a in aggs:
            u = take()
            h = (u * _GOLDEN) & 0xFFFFFFFF
            bid_qty = step * (1 + h % span)
            ask_qty = step * (1 + (h >> 13) % span)
            out.append(BookTicker(symbol, u, max(a.price - tick, 0), bid_qty, a.price + tick,
                                  ask_qty))  # fmt: skip
        return out

    def release_ids(self) -> None:
        self.ids.release()
