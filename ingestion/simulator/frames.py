"""Binance payloads and WebSocket frames as bytes, built from string templates (the hot path).

Payload field order and formats follow Binance exactly: ``e E s t p q T m M`` for trades,
``e E s a p q f l T m M`` for aggregate trades, prices and quantities as 8-decimal strings.
Server-to-client WebSocket frames are unmasked, so one encoded frame can be written to any
number of connections without going through the websockets library per message.
"""

from __future__ import annotations

import json
import struct
from typing import NamedTuple

from ingestion.simulator.market import format_units


class Trade(NamedTuple):
    """One generated trade; ``payload`` is its Binance ``@trade`` JSON."""

    symbol: str
    id: int
    price: int  # 1e-8 units
    qty: int  # 1e-8 units
    time: int  # T, ms
    event_time: int  # E, ms
    is_buyer_maker: bool
    payload: str


class AggTrade(NamedTuple):
    """Trades of one taker order at one price, as Binance aggregates them. The payload is
    built on demand: most runs never stream ``@aggTrade``."""

    symbol: str
    id: int
    price: int
    qty: int
    first_id: int
    last_id: int
    time: int
    event_time: int
    is_buyer_maker: bool

    @property
    def payload(self) -> str:
        return agg_payload(
            self.symbol, self.id, self.price, self.qty, self.first_id, self.last_id,
            self.time, self.event_time, self.is_buyer_maker,
        )  # fmt: skip


TRADE_TEMPLATE = '{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%s","q":"%s","T":%d,"m":%s,"M":true}'
AGG_TEMPLATE = (
    '{"e":"aggTrade","E":%d,"s":"%s","a":%d,"p":"%s","q":"%s","f":%d,"l":%d,"T":%d,"m":%s,"M":true}'
)
_BOOL = ("false", "true")


def trade_payload(symbol: str, trade_id: int, price: int, qty: int, t: int, e: int, m: bool) -> str:
    return TRADE_TEMPLATE % (
        e,
        symbol,
        trade_id,
        format_units(price),
        format_units(qty),
        t,
        _BOOL[m],
    )


def agg_payload(
    symbol: str, agg_id: int, price: int, qty: int, first: int, last: int, t: int, e: int, m: bool
) -> str:
    return AGG_TEMPLATE % (
        e,
        symbol,
        agg_id,
        format_units(price),
        format_units(qty),
        first,
        last,
        t,
        _BOOL[m],
    )


def combined(stream: str, payload: str) -> str:
    """The combined-stream wrapper ``{"stream":...,"data":...}``."""
    return f'{{"stream":"{stream}","data":{payload}}}'


def text_frame(data: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 5.2) carrying ``data``."""
    n = len(data)
    if n < 126:
        return _SHORT(0x81, n) + data
    if n < 65536:
        return _MEDIUM(0x81, 126, n) + data
    return _LONG(0x81, 127, n) + data


_SHORT = struct.Struct(">BB").pack
_MEDIUM = struct.Struct(">BBH").pack
_LONG = struct.Struct(">BBQ").pack


def encode_frames(events: list[tuple[str, str]], is_combined: bool) -> list[bytes]:
    """WebSocket frames of ``(stream, payload)`` events, wrapped when ``is_combined``."""
    out: list[bytes] = []
    append = out.append
    if is_combined:
        prefixes: dict[str, str] = {}
        for stream, payload in events:
            prefix = prefixes.get(stream) or prefixes.setdefault(
                stream, f'{{"stream":"{stream}","data":'
            )
            data = (prefix + payload + "}").encode()
            append(text_frame(data))
    else:
        for _, payload in events:
            append(text_frame(payload.encode()))
    return out


def server_shutdown(event_time: int, is_combined: bool) -> str:
    """Binance's ``serverShutdown`` event (stream ``!serverShutdown`` when combined)."""
    payload = f'{{"e":"serverShutdown","E":{event_time}}}'
    return combined("!serverShutdown", payload) if is_combined else payload


#: Kinds of malformed frames, sent in turn: what a client must survive without losing trades.
MALFORMED_KINDS = ("invalid_json", "not_a_trade", "missing_fields")


def malformed_payload(kind: str, symbol: str, event_time: int) -> str:
    """A payload that is not a valid trade. It never carries a real trade id."""
    if kind == "invalid_json":
        return f'{{"e":"trade","E":{event_time},"s":"{symbol}","t":'  # truncated
    if kind == "not_a_trade":
        return json.dumps({"e": "simulatorNoise", "E": event_time, "s": symbol})
    if kind == "missing_fields":
        return f'{{"e":"trade","E":{event_time},"s":"{symbol}","p":90000.01,"m":"maybe"}}'
    raise ValueError(f"unknown malformed frame kind {kind!r}")
