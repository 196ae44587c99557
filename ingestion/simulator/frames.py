"""Binance payloads and WebSocket frames as bytes, built from string templates (the hot path).

Payload field order and formats follow Binance exactly: ``e E s t p q T m M`` for trades,
``e E s a p q f l T m M`` for aggregate trades, prices and quantities as 8-decimal strings
(klines: ``klines.py``, book tickers: ``book.py``). Times are milliseconds, or microseconds for
a client that asked for ``timeUnit=MICROSECOND`` (``payload_us``, built only for such clients).
Server-to-client WebSocket frames are unmasked, so one encoded frame can be written to any
number of connections without going through the websockets library per message.
"""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple

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
    time_us: int  # T in microseconds (T = time_us // 1000)

    @property
    def payload_us(self) -> str:
        """The payload with ``E`` and ``T`` in microseconds."""
        e_us = self.time_us + (self.event_time - self.time) * 1000
        return trade_payload(
            self.symbol, self.id, self.price, self.qty, self.time_us, e_us, self.is_buyer_maker
        )


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
    time_us: int

    @property
    def payload(self) -> str:
        return agg_payload(
            self.symbol, self.id, self.price, self.qty, self.first_id, self.last_id,
            self.time, self.event_time, self.is_buyer_maker,
        )  # fmt: skip

    @property
    def payload_us(self) -> str:
        e_us = self.time_us + (self.event_time - self.time) * 1000
        return agg_payload(
            self.symbol, self.id, self.price, self.qty, self.first_id, self.last_id,
            self.time_us, e_us, self.is_buyer_maker,
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


#: One streamed message: (stream, payload with ms times, source). The source builds the
#: payload in microseconds (``payload_us``); None when the payload has no time field.
Event = tuple[str, str, Any]


def encode_frames(events: list[Event], is_combined: bool, micros: bool = False) -> list[bytes]:
    """WebSocket frames of ``events``, wrapped when ``is_combined``, times in µs when
    ``micros``."""
    out: list[bytes] = []
    append = out.append
    if micros:
        events = [(s, p if src is None else src.payload_us, src) for s, p, src in events]
    if is_combined:
        prefixes: dict[str, str] = {}
        for stream, payload, _ in events:
            prefix = prefixes.get(stream) or prefixes.setdefault(
                stream, f'{{"stream":"{stream}","data":'
            )
            data = (prefix + payload + "}").encode()
            append(text_frame(data))
    else:
        for _, payload, _ in events:
            append(text_frame(payload.encode()))
    return out


def server_shutdown(event_time: int, is_combined: bool) -> str:
    """Binance's ``serverShutdown`` event (stream ``!serverShutdown`` when combined)."""
    payload = f'{{"e":"serverShutdown","E":{event_time}}}'
    return combined("!serverShutdown", payload) if is_combined else payload


#: Kinds of malformed frames, sent in turn: what a client must survive without losing trades.
MALFORMED_KINDS = ("invalid_json", "not_a_trade", "missing_fields")

#: Per stream kind: the start of a truncated payload and a payload without its id field and
#: with wrongly typed values (a JSON number for a decimal string, a string for a boolean...).
_BROKEN = {
    "trade": (
        '{"e":"trade","E":%d,"s":"%s","t":',
        '{"e":"trade","E":%d,"s":"%s","p":90000.01,"m":"maybe"}',
    ),
    "aggTrade": (
        '{"e":"aggTrade","E":%d,"s":"%s","a":',
        '{"e":"aggTrade","E":%d,"s":"%s","p":90000.01,"m":"maybe"}',
    ),
    "kline_1m": (
        '{"e":"kline","E":%d,"s":"%s","k":{"t":',
        '{"e":"kline","E":%d,"s":"%s","k":{"t":"soon","o":90000.01,"x":"maybe"}}',
    ),
    "bookTicker": ('{"E":%d,"s":"%s","u":', '{"E":%d,"s":"%s","b":90000.01,"A":"lots"}'),
}


def malformed_payload(kind: str, symbol: str, event_time: int, stream_kind: str = "trade") -> str:
    """A payload of ``stream_kind`` that is not a valid record. It never carries a real id.
    (The book ticker's carry an ``E`` so that none of them is a valid book ticker.)"""
    truncated, missing = _BROKEN[stream_kind]
    if kind == "invalid_json":
        return truncated % (event_time, symbol)
    if kind == "not_a_trade":
        return json.dumps({"e": "simulatorNoise", "E": event_time, "s": symbol})
    if kind == "missing_fields":
        return missing % (event_time, symbol)
    raise ValueError(f"unknown malformed frame kind {kind!r}")
