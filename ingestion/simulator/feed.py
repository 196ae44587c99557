"""Turns a symbol's market model into trades and aggregate trades with real ids, on a clock."""

from __future__ import annotations

from ingestion.simulator.frames import AggTrade, Trade, agg_payload, trade_payload
from ingestion.simulator.ids import IdStore
from ingestion.simulator.market import Order, SymbolMarket, SymbolSpec


class SymbolFeed:
    """Trades of one symbol: ``take_due(elapsed_ms)`` returns those whose time has come."""

    def __init__(
        self,
        spec: SymbolSpec,
        trades_per_s: float,
        seed: int | str | None,
        ids: IdStore,
        start_ms: int,
        max_trades: int | None = None,
    ) -> None:
        self.symbol = spec.symbol
        self.market = SymbolMarket(spec, trades_per_s, seed)
        self.trade_ids = ids.sequence(spec.symbol, "trade")
        self.agg_ids = ids.sequence(spec.symbol, "agg")
        self.start_ms = start_ms
        self.max_trades = max_trades
        self.generated = 0
        self._pending: Order = self.market.next_order()

    @property
    def finished(self) -> bool:
        return self.max_trades is not None and self.generated >= self.max_trades

    @property
    def next_offset_ms(self) -> float:
        return self._pending.offset_ms

    def take_due(
        self, elapsed_ms: float, limit: int, trades: list[Trade], aggs: list[AggTrade]
    ) -> None:
        """Append trades of orders due by ``elapsed_ms`` (at most about ``limit`` trades)."""
        symbol = self.symbol
        budget = limit
        while not self.finished and budget > 0 and self._pending.offset_ms <= elapsed_ms:
            order = self._pending
            t = self.start_ms + int(order.offset_ms)
            e = t + order.event_delay_ms
            m = order.is_buyer_maker
            agg_first = agg_price = agg_qty = None
            for fill in order.fills:
                if self.finished:
                    break
                trade_id = self.trade_ids.take()
                payload = trade_payload(symbol, trade_id, fill.price, fill.qty, t, e, m)
                trades.append(Trade(symbol, trade_id, fill.price, fill.qty, t, e, m, payload))
                self.generated += 1
                budget -= 1
                if agg_price != fill.price:
                    if agg_first is not None:
                        aggs.append(self._agg(agg_first, agg_price, agg_qty, trade_id - 1, t, e, m))
                    agg_first, agg_price, agg_qty = trade_id, fill.price, 0
                agg_qty += fill.qty
            if agg_first is not None:
                aggs.append(self._agg(agg_first, agg_price, agg_qty, trades[-1].id, t, e, m))
            self._pending = self.market.next_order()

    def _agg(
        self, first: int, price: int, qty: int, last: int, t: int, e: int, m: bool
    ) -> AggTrade:
        agg_id = self.agg_ids.take()
        payload = agg_payload(self.symbol, agg_id, price, qty, first, last, t, e, m)
        return AggTrade(self.symbol, agg_id, price, qty, first, last, t, e, m, payload)

    def release_ids(self) -> None:
        """Give back reserved but unused ids (clean stop)."""
        self.trade_ids.release()
        self.agg_ids.release()
