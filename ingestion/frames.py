"""Exchange frames: classify raw bytes cheaply, and build trade frames in Binance's shape.

The hot path must not json-parse every frame: a frame in the exact shape Binance sends is
recognised by one anchored regex (which also proves it is valid JSON); anything else goes
through ``json.loads`` and a field-by-field check that names what is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

UNKNOWN_KEY = b"_unknown"
INVALID_HEADER = "cryptoflow.invalid"

# {"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":2,"p":"1.0","q":"1.0",
#  "T":1,"m":true,"M":true}} exactly as Binance serialises it (no whitespace, this field order).
_FAST = re.compile(
    rb'\{"stream":"([a-z0-9]+)@trade","data":\{"e":"trade","E":\d{1,16},"s":"([A-Z0-9]+)",'
    rb'"t":(\d{1,19}),"p":"\d+(?:\.\d+)?","q":"\d+(?:\.\d+)?","T":\d{1,16},'
    rb'"m":(?:true|false),"M":(?:true|false)\}\}'
)
_SYMBOL_HINT = re.compile(rb'"s"\s*:\s*"([A-Za-z0-9]{1,20})"')
_STREAM_HINT = re.compile(rb'"stream"\s*:\s*"([A-Za-z0-9]{1,20})@')

#: Trade payload fields and the JSON type each must have.
TRADE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "e": str,
    "E": int,
    "s": str,
    "t": int,
    "p": str,
    "q": str,
    "T": int,
    "m": bool,
    "M": bool,
}


@dataclass(frozen=True, slots=True)
class Frame:
    """What ingestion needs to know about one received frame."""

    key: bytes  # Kafka key: the symbol, or UNKNOWN_KEY
    symbol: str | None  # the trade's symbol when the frame is a trade
    trade_id: int | None  # the trade id when the frame is a trade
    invalid: str | None  # reason the frame is not a trade, None for a good trade
    event: str | None = None  # payload "e" of a non-trade event (e.g. "serverShutdown")


def classify(raw: bytes) -> Frame:
    """Symbol, trade id and validity of a raw frame, parsing JSON only off the fast path."""
    m = _fast_match(raw)
    if m is not None:
        stream, symbol, trade_id = m.groups()
        known = _SYMBOLS.get(symbol)
        if known is None:
            known = _SYMBOLS[symbol] = (symbol.decode(), symbol.lower())
        if stream == known[1]:
            return Frame(symbol, known[0], int(trade_id), None)
    return _classify_slow(raw)


_fast_match = _FAST.fullmatch
_SYMBOLS: dict[bytes, tuple[str, bytes]] = {}  # symbol bytes -> (str, lower-case stream name)


def _classify_slow(raw: bytes) -> Frame:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Frame(_key_hint(raw), None, None, "not UTF-8")
    try:
        doc = json.loads(text)
    except ValueError:
        return Frame(_key_hint(raw), None, None, "invalid JSON")
    if not isinstance(doc, dict):
        return Frame(UNKNOWN_KEY, None, None, "not a JSON object")
    data = doc.get("data", doc) if "stream" in doc else doc
    if "event" in doc and isinstance(doc["event"], dict):  # WebSocket-API style event wrapper
        data = doc["event"]
    if not isinstance(data, dict):
        return Frame(UNKNOWN_KEY, None, None, "data is not an object")
    event = data.get("e")
    key = _symbol_key(data.get("s"))
    if event != "trade":
        reason = f"not a trade: e={event}" if event is not None else "not a trade event"
        return Frame(key, None, None, reason, event if isinstance(event, str) else None)
    for name, kind in TRADE_FIELDS.items():
        if name not in data:
            return Frame(key, None, None, f"missing field {name}")
        value = data[name]
        # bool is a subclass of int: a boolean where a number belongs is still the wrong type
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return Frame(key, None, None, f"wrong type for {name}")
    if not data["s"].isalnum():
        return Frame(UNKNOWN_KEY, None, None, "bad symbol")
    return Frame(data["s"].encode(), data["s"], data["t"], None)


def _symbol_key(value: object) -> bytes:
    if isinstance(value, str) and value.isalnum() and 0 < len(value) <= 20:
        return value.upper().encode()
    return UNKNOWN_KEY


def _key_hint(raw: bytes) -> bytes:
    """Best-effort symbol of an unparseable frame, so it lands beside its symbol's trades."""
    m = _SYMBOL_HINT.search(raw)
    if m:
        return m.group(1).upper()
    m = _STREAM_HINT.search(raw)
    return m.group(1).upper() if m else UNKNOWN_KEY


def trade_frame(
    symbol: str,
    trade_id: int,
    price: str,
    qty: str,
    trade_time: int,
    is_buyer_maker: bool,
    is_best_match: bool,
    event_time: int | None = None,
) -> bytes:
    """A combined-stream trade frame in Binance's exact serialisation (for backfill and CSV)."""
    data = (
        f'{{"e":"trade","E":{trade_time if event_time is None else event_time},'
        f'"s":"{symbol}","t":{trade_id},"p":"{price}","q":"{qty}","T":{trade_time},'
        f'"m":{"true" if is_buyer_maker else "false"},"M":{"true" if is_best_match else "false"}}}'
    )
    return f'{{"stream":"{symbol.lower()}@trade","data":{data}}}'.encode()


def rest_trade_frame(symbol: str, trade: dict) -> bytes:
    """Frame for one ``/api/v3/historicalTrades`` item (id, price, qty, time, isBuyerMaker...)."""
    return trade_frame(
        symbol,
        int(trade["id"]),
        str(trade["price"]),
        str(trade["qty"]),
        int(trade["time"]),
        bool(trade["isBuyerMaker"]),
        bool(trade.get("isBestMatch", True)),
    )
