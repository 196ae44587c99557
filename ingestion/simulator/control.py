"""Binance's live subscription requests over the stream WebSocket, as a pure function.

``{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}`` -> ``{"result":null,"id":1}``;
errors use Binance's codes: 0 unknown property, 1 not a boolean, 2 invalid request,
3 invalid JSON, e.g. ``{"error":{"code":2,"msg":"Invalid request: ..."},"id":1}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
MAX_STREAMS = 1024
_STRING_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_STREAM = re.compile(r"^!?[A-Za-z0-9]+(@[A-Za-z0-9_]+)*$")


@dataclass
class Subscriptions:
    """What one connection listens to and how frames are wrapped (``combined``)."""

    combined: bool
    streams: list[str] = field(default_factory=list)
    micros: bool = False  # times in microseconds (``timeUnit=MICROSECOND`` in the URL)

    def add(self, names: list[str]) -> None:
        for name in names:
            if name not in self.streams:
                self.streams.append(name)

    def remove(self, names: list[str]) -> None:
        self.streams = [s for s in self.streams if s not in names]


def streams_from_path(path: str) -> tuple[bool, list[str]] | None:
    """``/ws/a@trade/b@trade`` -> (raw, [...]); ``/stream?streams=a/b`` -> (combined, [...]).

    Returns None for a path that is not a stream endpoint.
    """
    route, _, query = path.partition("?")
    route = route.rstrip("/")
    if route == "/ws" or route.startswith("/ws/"):
        return False, [s for s in route[4:].split("/") if s]
    if route == "/stream":
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        return True, [s for s in params.get("streams", "").split("/") if s]
    return None


#: ``timeUnit`` values Binance accepts, and whether each means microseconds.
TIME_UNITS = {"MILLISECOND": False, "millisecond": False, "MICROSECOND": True, "microsecond": True}


def micros_from_path(path: str) -> bool | None:
    """Whether a stream URL asks for microseconds (``?timeUnit=MICROSECOND``); None when its
    ``timeUnit`` is not a unit Binance knows."""
    _, _, query = path.partition("?")
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    if "timeUnit" not in params:
        return False
    return TIME_UNITS.get(params["timeUnit"])


def error(code: int, msg: str, request_id: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": request_id}


def handle(text: str | bytes, subs: Subscriptions) -> dict[str, Any]:
    """Apply one client request to ``subs`` and return Binance's reply."""
    try:
        request = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        line, col = (e.lineno, e.colno) if isinstance(e, json.JSONDecodeError) else (1, 1)
        return error(3, f"Invalid JSON: expected value at line {line} column {col}")
    if not isinstance(request, dict):
        return error(2, "Invalid request: expected a JSON object")
    request_id = request.get("id")
    if not _valid_id(request_id):
        return error(2, "Invalid request: request ID must be an unsigned integer")
    unknown = set(request) - {"method", "params", "id"}
    if unknown:
        return error(2, "Invalid request: too many parameters", request_id)
    method = request.get("method")
    if method is None:
        col = len(text) if isinstance(text, str) else len(text.decode(errors="replace"))
        return error(
            2, f"Invalid request: missing field `method` at line 1 column {col}", request_id
        )
    if method not in METHODS:
        names = ", ".join(f"`{m}`" for m in METHODS)
        return error(
            2, f"Invalid request: unknown variant `{method}`, expected one of {names}", request_id
        )
    params = request.get("params", [])
    if not isinstance(params, list):
        return error(2, "Invalid request: params must be an array", request_id)
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return _change(method, params, subs, request_id)
    if method == "LIST_SUBSCRIPTIONS":
        return {"result": list(subs.streams), "id": request_id}
    return _property(method, params, subs, request_id)


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value < 2**64
    return isinstance(value, str) and bool(_STRING_ID.match(value))


def _change(method: str, params: list[Any], subs: Subscriptions, request_id: Any) -> dict:
    if not all(isinstance(p, str) for p in params):
        return error(2, "Invalid request: stream names must be strings", request_id)
    bad = [p for p in params if not _STREAM.match(p)]
    if bad:
        return error(2, f"Invalid request: invalid stream name {bad[0]!r}", request_id)
    if method == "SUBSCRIBE":
        if len(set(subs.streams) | set(params)) > MAX_STREAMS:
            return error(
                2, f"Invalid request: a connection can listen to {MAX_STREAMS} streams", request_id
            )
        subs.add(params)
    else:
        subs.remove(params)
    return {"result": None, "id": request_id}


def _property(method: str, params: list[Any], subs: Subscriptions, request_id: Any) -> dict:
    if not params or not isinstance(params[0], str):
        return error(2, "Invalid request: property name must be a string", request_id)
    if params[0] != "combined":
        return error(0, "Unknown property", request_id)
    if method == "GET_PROPERTY":
        if len(params) != 1:
            return error(2, "Invalid request: too many parameters", request_id)
        return {"result": subs.combined, "id": request_id}
    if len(params) != 2 or not isinstance(params[1], bool):
        return error(1, "Invalid value type: expected Boolean", request_id)
    subs.combined = params[1]
    return {"result": None, "id": request_id}
