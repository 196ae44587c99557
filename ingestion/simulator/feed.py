"""Turns a symbol's market model into trades and aggregate trades with real ids, on a clock."""

from __future__ import annotations

import sys

from ingestion.simulator.frames import TRADE_TEMPLATE, AggTrade, Trade
from ingestion.simulator.ids import IdStore
from ingestion.simulator.market import OrderBlock, SymbolMarket, SymbolSpec, format_units

_BOOL = ("false", "true")
TEXT_CACHE_SIZE = 200_000


class SymbolFeed:
    """Trades of one symbol: ``take_due(elapsed_ms, ...)`` appends those whose time has come.

    Trades of one taker order share ``T``, ``E`` and ``m``; consecutive trades of an order at
    the same price form one aggregate trade (``f``..``l``), as on Binance.
    """

    def __init__(
        self,
        spec: SymbolSpec,
        trades_per_s: float,
        seed: int,
        ids: IdStore,
        start_ms: int,
        max_trades: int | None = None,
    ) -> None:
        self.symbol = spec.symbol
        self.market = SymbolMarket(spec, trades_per_s, seed)
        self.trade_ids = ids.sequence(spec.symbol, "trade")
        self.agg_ids = ids.sequence(spec.symbol, "agg")
        self.start_ms = start_ms
        self.start_us = start_ms * 1000
        self.max_trades = max_trades
        self.generated = 0
        self._block: OrderBlock = self.market.next_block()
        self._order = 0  # next order of the block
        self._text: dict[int, str] = {}  # 1e-8 units -> Binance string (prices and sizes repeat)

    @property
    def finished(self) -> bool:
        return self.max_trades is not None and self.generated >= self.max_trades

    @property
    def next_offset_ms(self) -> float:
        """When the next order is due: its event time ``E`` (never in the future when sent)."""
        return self._block.offset_ms[self._order] + self._block.event_delay_ms[self._order]

    @property
    def horizon_ms(self) -> int | None:
        """Every trade with ``T`` before this has been generated (None once finished: no
        trade will ever come)."""
        if self.finished:
            return None
        return (self.start_us + int(self._block.offset_ms[self._order] * 1000)) // 1000

    def take_due(
        self, elapsed_ms: float, limit: int, trades: list[Trade], aggs: list[AggTrade]
    ) -> None:
        """Append trades of orders due by ``elapsed_ms``; whole orders, until about ``limit``
        trades (only ``max_trades`` cuts an order short, so the output never depends on
        how the clock split the work)."""
        symbol = self.symbol
        remaining = sys.maxsize if self.max_trades is None else self.max_trades - self.generated
        block, i = self._block, self._order
        offsets, sells, delays, starts = (
            block.offset_ms, block.is_buyer_maker, block.event_delay_ms, block.fill_start
        )  # fmt: skip
        prices, qtys = block.price, block.qty
        take_trade_id, take_agg_id = self.trade_ids.take, self.agg_ids.take
        start_us = self.start_us
        text = self._text
        if len(text) > TEXT_CACHE_SIZE:
            text.clear()
        new, append = tuple.__new__, trades.append
        made = 0
        while made < limit and made < remaining and offsets[i] + delays[i] <= elapsed_ms:
            t_us = start_us + int(offsets[i] * 1000)  # µs kept exact; T = t_us // 1000
            t = t_us // 1000
            e = t + delays[i]
            m = sells[i]
            m_text = _BOOL[m]
            first_fill, end_fill = starts[i], min(starts[i + 1], starts[i] + remaining - made)
            agg_first = agg_price = agg_qty = prev_id = 0
            for f in range(first_fill, end_fill):
                price, qty = prices[f], qtys[f]
                trade_id = take_trade_id()
                p_text = text.get(price) or text.setdefault(price, format_units(price))
                q_text = text.get(qty) or text.setdefault(qty, format_units(qty))
                payload = TRADE_TEMPLATE % (e, symbol, trade_id, p_text, q_text, t, m_text)
                append(new(Trade, (symbol, trade_id, price, qty, t, e, m, payload, t_us)))
                if price != agg_price:
                    if agg_first:
                        aggs.append(self._agg(take_agg_id(), agg_first, agg_price, agg_qty,
                                              prev_id, t, e, m, t_us))  # fmt: skip
                    agg_first, agg_price, agg_qty = trade_id, price, 0
                agg_qty += qty
                prev_id = trade_id
            made += end_fill - first_fill
            if agg_first:
                aggs.append(
                    self._agg(take_agg_id(), agg_first, agg_price, agg_qty, prev_id, t, e, m, t_us)
                )
            i += 1
            if i == len(offsets):
                block, i = self.market.next_block(), 0
                self._block = block
                offsets, sells, delays, starts = (
                    block.offset_ms, block.is_buyer_maker, block.event_delay_ms, block.fill_start
                )  # fmt: skip
                prices, qtys = block.price, block.qty
        self._order = i
        self.generated += made

    def _agg(
        self, agg_id: int, first: int, price: int, qty: int, last: int, t: int, e: int, m: bool,
        t_us: int,
    ) -> AggTrade:  # fmt: skip
        values = (self.symbol, agg_id, price, qty, first, last, t, e, m, t_us)
        return tuple.__new__(AggTrade, values)

    def release_ids(self) -> None:
        """Give back reserved but unused ids (clean stop)."""
        self.trade_ids.release()
        self.agg_ids.release()
