"""Rows of Binance's REST market-data answers, in Binance's field order; times in ms or µs."""

from __future__ import annotations

from decimal import Decimal

from ingestion.simulator.frames import AggTrade, Trade
from ingestion.simulator.market import UNIT, format_units


def quote_qty(price: int, qty: int) -> str:
    """price * qty, exact, without trailing zeros (Binance prints ``"48.000012"``)."""
    value = Decimal(price) * Decimal(qty) / Decimal(UNIT) / Decimal(UNIT)
    text = format(value.quantize(Decimal("0.00000001")), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def trade_json(t: Trade, micros: bool = False) -> dict:
    """A row of ``trades`` / ``historicalTrades``."""
    return {
        "id": t.id,
        "price": format_units(t.price),
        "qty": format_units(t.qty),
        "quoteQty": quote_qty(t.price, t.qty),
        "time": t.time_us if micros else t.time,
        "isBuyerMaker": t.is_buyer_maker,
        "isBestMatch": True,
    }


def agg_json(a: AggTrade, micros: bool = False) -> dict:
    """A row of ``aggTrades``."""
    return {
        "a": a.id,
        "p": format_units(a.price),
        "q": format_units(a.qty),
        "f": a.first_id,
        "l": a.last_id,
        "T": a.time_us if micros else a.time,
        "m": a.is_buyer_maker,
        "M": True,
    }
