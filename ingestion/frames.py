"""Exchange frames: classify raw bytes cheaply by stream kind, and build trade frames.

The kind of a frame comes from the combined wrapper's stream name (``btcusdt@aggTrade``,
``cryptoflow.core.streams.kind_of_stream``), or, for a bare payload, from its event name ``e``.
The hot path must not json-parse every frame: a frame in the exact shape its kind's frames
had before is recognised by one anchored regex (``ingestion.shapes``), which also proves it is
valid JSON; anything else goes through ``json.loads`` and a check of every field the registry
declares, which names what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import NamedTuple

from cryptoflow.core.streams import DEFAULT_STREAMS, KINDS, StreamKind, kind_of_stream
from ingestion.shapes import Shape, learn

UNKNOWN_KEY = b"_unknown"
INVALID_HEADER = "cryptoflow.invalid"

_SYMBOL_HINT = re.compile(rb'"s"\s*:\s*"([A-Za-z0-9]{1,20})"')
_STREAM_HINT = re.compile(rb'"stream"\s*:\s*"([A-Za-z0-9]{1,20})@(?:([A-Za-z0-9_]{1,40})")?')
#: JSON types of each registry field kind (``Field.kind``).
_TYPES: dict[str, type] = {
    "string": str, "symbol": str, "decimal": str, "volume": str,
    "long": int, "time": int, "bool": bool,
}  # fmt: skip
#: The kind a frame is held to when nothing tells its kind (the first of the registry).
FALLBACK = KINDS[DEFAULT_STREAMS[0]]
_BY_EVENT = {k.event: k for k in KINDS.values() if k.event is not None}
MAX_SHAPES = 4  # fast shapes learned per kind (an open and a closed kline, ms and µs...)
MAX_LESSONS = 64  # frames per kind the slow path tries to learn a shape from


class Frame(NamedTuple):
    """What ingestion needs to know about one received frame (a tuple: the cheapest to make
    once per frame)."""

    key: bytes  # Kafka key: the symbol, or UNKNOWN_KEY
    symbol: str | None  # the payload's symbol when the frame is valid
    record_id: int | None  # its continuity id, when it counts (a closed kline's open time)
    invalid: str | None  # reason the frame is not a valid frame of its kind, None if it is
    event: str | None = None  # payload "e" of a frame of no kind (e.g. "serverShutdown")
    kind: StreamKind | None = None  # None: no (chosen) kind could be told


class Classifier:
    """``classify`` for the stream kinds ``kinds``: a frame of another kind is invalid."""

    def __init__(self, kinds: Iterable[StreamKind] = KINDS.values()) -> None:
        self.kinds = {k.name: k for k in kinds}
        self._shapes: dict[bytes, list[Shape]] = {k.encode(): [] for k in self.kinds}
        self._lessons = dict.fromkeys(self.kinds, 0)
        self._symbols: dict[bytes, tuple[str, bytes]] = {}  # symbol -> (str, lower case)

    def __call__(self, raw: bytes) -> Frame:
        """Symbol, continuity id, kind and validity of a raw frame."""
        if raw.startswith(b'{"stream":"'):
            at = raw.find(b"@", 11, 40)
            shapes = self._shapes.get(raw[at + 1 : raw.find(b'"', at)]) if at > 0 else None
            if shapes:
                for shape in shapes:
                    m = shape.match(raw)
                    if m is None:
                        continue
                    stream, symbol, ident, final = m.group(*shape.groups)
                    known = self._symbols.get(symbol)
                    if known is None:
                        known = self._symbols[symbol] = (symbol.decode(), symbol.lower())
                    if stream != known[1]:
                        break  # the stream's symbol is not the payload's: the slow path says
                    counted = shape.groups[2] and (not shape.groups[3] or final == b"true")
                    return Frame(symbol, known[0], int(ident) if counted else None, None, None,
                                 shape.kind)  # fmt: skip
        return self._slow(raw)

    def _slow(self, raw: bytes) -> Frame:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Frame(_key_hint(raw), None, None, "not UTF-8", None, self._hinted(raw))
        try:
            doc = json.loads(text)
        except ValueError:
            return Frame(_key_hint(raw), None, None, "invalid JSON", None, self._hinted(raw))
        if not isinstance(doc, dict):
            return Frame(UNKNOWN_KEY, None, None, "not a JSON object")
        stream = doc.get("stream")
        data = doc.get("data", doc) if "stream" in doc else doc
        if "event" in doc and isinstance(doc["event"], dict):  # WebSocket-API style wrapper
            data = doc["event"]
        named = kind_of_stream(stream) if isinstance(stream, str) else None
        if not isinstance(data, dict):
            reason = "data is not an object"
            return Frame(UNKNOWN_KEY, None, None, reason, None, self._chosen(named))
        event = data.get("e")
        kind = named or (_BY_EVENT.get(event) if isinstance(event, str) else None)
        key = _symbol_key(data.get("s"))
        if kind is None or event != kind.event:
            held = kind or FALLBACK
            reason = f"not a {held.name}: e={event}" if event is not None else (
                f"not a {held.name} event")  # fmt: skip
            event_name = event if isinstance(event, str) else None
            return Frame(key, None, None, reason, event_name, self._chosen(named))
        if kind.name not in self.kinds:
            return Frame(key, None, None, f"stream kind {kind.name} not ingested")
        wrong = _check(kind, data)
        if wrong is not None:
            return Frame(UNKNOWN_KEY if wrong == "bad symbol" else key, None, None, wrong,
                         None, kind)  # fmt: skip
        symbol = data["s"]
        frame = Frame(symbol.encode(), symbol, _record_id(kind, data), None, None, kind)
        if named is kind and stream == kind.stream(symbol):
            self._learn(kind, data, raw)
        return frame

    def _learn(self, kind: StreamKind, data: dict, raw: bytes) -> None:
        shapes = self._shapes[kind.name.encode()]
        if len(shapes) >= MAX_SHAPES or self._lessons[kind.name] >= MAX_LESSONS:
            return
        self._lessons[kind.name] += 1
        shape = learn(kind, data, raw)
        if shape is not None:
            shapes.append(shape)

    def _chosen(self, kind: StreamKind | None) -> StreamKind | None:
        return kind if kind is not None and kind.name in self.kinds else None

    def _hinted(self, raw: bytes) -> StreamKind | None:
        """The kind named by the stream name of a frame that does not parse, if readable."""
        m = _STREAM_HINT.search(raw)
        return self._chosen(KINDS.get(m.group(2).decode())) if m and m.group(2) else None


def _get(data: dict, key: str) -> tuple[bool, object]:
    """(present, value) of a registry key, ``k.t`` inside the nested object."""
    outer, dot, inner = key.partition(".")
    if not dot:
        return (outer in data), data.get(outer)
    nested = data.get(outer)
    if not isinstance(nested, dict) or inner not in nested:
        return False, None
    return True, nested[inner]


def _check(kind: StreamKind, data: dict) -> str | None:
    """Why ``data`` is not a valid payload of ``kind`` (None: it is)."""
    if kind.nested is not None and not isinstance(data.get(kind.nested), dict):
        return f"missing field {kind.nested}"
    for f in kind.fields:
        present, value = _get(data, f.key)
        if not present:
            if f.required:
                return f"missing field {f.key}"
            continue
        want = _TYPES[f.kind]
        # bool is a subclass of int: a boolean where a number belongs is still the wrong type
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            return f"wrong type for {f.key}"
        if f.kind == "symbol" and "." not in f.key and not str(value).isalnum():
            return "bad symbol"
    return None


def _record_id(kind: StreamKind, data: dict) -> int | None:
    """The continuity id of a valid payload, None when it does not count (an open kline)."""
    cont = kind.continuity
    if cont is None:
        return None
    if cont.final is not None and _get(data, cont.final)[1] is not True:
        return None
    value = _get(data, cont.field)[1]
    return value if isinstance(value, int) else None


_DEFAULT = Classifier()


def classify(raw: bytes) -> Frame:
    """``Classifier`` over every registry kind (resume, tools, tests)."""
    return _DEFAULT(raw)


def _symbol_key(value: object) -> bytes:
    if isinstance(value, str) and value.isalnum() and 0 < len(value) <= 20:
        return value.upper().encode()
    return UNKNOWN_KEY


def _key_hint(raw: bytes) -> bytes:
    """Best-effort symbol of an unparseable frame, so it lands beside its symbol's frames."""
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
