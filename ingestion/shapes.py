"""The classifier's fast path: the exact shape of a stream kind's frames as one anchored regex.

A frame the slow path accepted (``json.loads`` and a check of every registry field) is taken
as a template: its keys in the order the exchange wrote them, each value by JSON type, no
whitespace. The regex compiled from it matches every later frame of the same shape and proves
it valid on the way (strings without escapes, integers, booleans, the nested kline object),
capturing just what ingestion needs: the stream's symbol, the payload's symbol, the
continuity id and the ``final`` flag. Nothing here names a stream kind: the captures come from
the registry entry (``StreamKind.fields`` and ``Continuity``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptoflow.core.streams import StreamKind

_INT = rb"-?\d{1,19}"  # (leading zeros pass, as in the hand-written regex before)
_NUM = rb"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?"
_STR = rb'"[^"\\\x00-\x1f]*"'
_DEC = rb'"\d+(?:\.\d+)?"'
_BOOL = rb"(?:true|false)"
_SYMBOL = rb'"([A-Z0-9]{1,20})"'
#: Field kinds (``Field.kind``) whose strings are decimals.
_DECIMAL_KINDS = ("decimal", "volume")


@dataclass(frozen=True)
class Shape:
    """A compiled frame shape. ``groups``: the match groups of (stream symbol, payload symbol,
    id, final); 0 (the whole match) stands for one the shape has not."""

    kind: StreamKind
    match: Callable[[bytes], re.Match[bytes] | None]
    groups: tuple[int, int, int, int]


class _Builder:
    def __init__(self, kind: StreamKind) -> None:
        self.kind = kind
        self.types = {f.key: f.kind for f in kind.fields}
        cont = kind.continuity
        self.id_key = cont.field if cont else None
        self.final_key = cont.final if cont else None
        self.count = 1  # group 1 is the stream's symbol
        self.found: dict[str, int] = {}

    def capture(self, name: str, pattern: bytes) -> bytes:
        self.count += 1
        self.found[name] = self.count
        return b"(" + pattern + b")" if not pattern.startswith(b'"(') else pattern

    def value(self, value: object, path: str) -> bytes | None:
        kind = self.types.get(path)
        event = self.kind.event
        if path == "e" and event is not None:  # the event name: exactly the kind's own
            return re.escape(json.dumps(event).encode()) if value == event else None
        if path == self.id_key and isinstance(value, int) and not isinstance(value, bool):
            return self.capture("id", _INT)
        if path == self.final_key and isinstance(value, bool):
            return self.capture("final", _BOOL)
        if kind == "symbol" and "." not in path and "symbol" not in self.found:
            return self.capture("symbol", _SYMBOL) if isinstance(value, str) else None
        if isinstance(value, bool):
            return _BOOL
        if isinstance(value, int):
            return _INT
        if isinstance(value, float):
            return _NUM
        if value is None:
            return b"null"
        if isinstance(value, str):
            return _DEC if kind in _DECIMAL_KINDS else _STR
        if isinstance(value, dict):
            return self.obj(value, f"{path}.")
        return None  # arrays: no fast shape

    def obj(self, doc: dict, prefix: str = "") -> bytes | None:
        parts = []
        for key, value in doc.items():
            quoted = json.dumps(key)
            if quoted != f'"{key}"':
                return None  # a key that needs escapes
            pattern = self.value(value, prefix + key)
            if pattern is None:
                return None
            parts.append(re.escape(quoted.encode()) + b":" + pattern)
        return rb"\{" + b",".join(parts) + rb"\}"


def learn(kind: StreamKind, data: dict, raw: bytes) -> Shape | None:
    """The shape of ``raw`` (a combined-stream frame of ``kind`` whose payload ``data`` the
    slow path accepted), or None when it has none the fast path can use (it must match
    ``raw`` itself, so a frame with whitespace or escapes teaches nothing)."""
    b = _Builder(kind)
    body = b.obj(data)
    if body is None or "symbol" not in b.found:
        return None
    head = rb'\{"stream":"([a-z0-9]{1,20})@' + re.escape(kind.name.encode()) + rb'","data":'
    regex = re.compile(head + body + rb"\}")
    if regex.fullmatch(raw) is None:
        return None
    groups = (1, b.found["symbol"], b.found.get("id", 0), b.found.get("final", 0))
    return Shape(kind, regex.fullmatch, groups)
