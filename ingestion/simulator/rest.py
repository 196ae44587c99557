"""Binance's public REST market-data endpoints over the simulator's history.

Answers like ``api.binance.com``: same paths, parameters, field names and error JSON
(``{"code":-1121,"msg":"Invalid symbol."}`` with HTTP 400), request weights reported in
``X-MBX-USED-WEIGHT-1M``, HTTP 429 + ``Retry-After`` beyond the per-minute weight limit and
418 (banned until the window ends) for a client that does not wait. Times are milliseconds, or
microseconds with ``timeUnit=MICROSECOND`` (query) or the ``X-MBX-TIME-UNIT`` header; time
parameters (``startTime``, ``endTime``) may be either unit, as on Binance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptoflow.core.streams import MICROS_FROM
from ingestion.simulator.control import TIME_UNITS
from ingestion.simulator.exchange_info import symbol_info
from ingestion.simulator.frames import AggTrade, Trade
from ingestion.simulator.history import History
from ingestion.simulator.klines import closed_klines
from ingestion.simulator.market import SymbolSpec
from ingestion.simulator.rest_rows import agg_json, quote_qty, trade_json

__all__ = ["ApiError", "RestApi", "RestResponse", "WeightLimiter", "quote_qty"]

#: Request weight per endpoint (Binance spot, 2025).
WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/trades": 25,
    "/api/v3/historicalTrades": 25,
    "/api/v3/aggTrades": 4,
    "/api/v3/klines": 2,
}
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000


@dataclass(frozen=True)
class RestResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """A Binance error: HTTP status plus ``{"code": ..., "msg": ...}``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class WeightLimiter:
    """Request weight per client IP in fixed one-minute windows, like Binance: beyond the
    limit a request gets 429; asking again before Retry-After has passed gets 418 (a ban)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self._used: dict[str, tuple[int, int, bool]] = {}  # ip -> (minute, weight, told off)

    def charge(self, ip: str, weight: int) -> tuple[int, int, int | None]:
        """Add ``weight``; returns (HTTP status 200/429/418, weight used this minute,
        Retry-After seconds when refused)."""
        now = self.clock()
        minute = int(now // 60)
        window, used, told = self._used.get(ip, (minute, 0, False))
        if window != minute:
            used, told = 0, False
        if told or used + weight > self.limit:
            self._used[ip] = (minute, used, True)
            return (418 if told else 429), used, max(1, int(60 - now % 60 + 0.999))
        self._used[ip] = (minute, used + weight, told)
        return 200, used + weight, None


class RestApi:
    """The REST endpoints; ``handle(path, ip)`` is all the server calls."""

    def __init__(
        self,
        specs: list[SymbolSpec],
        trades: dict[str, History[Trade]],
        aggs: dict[str, History[AggTrade]],
        weight_limit: int,
        extra: dict[str, Callable[[], Any]] | None = None,
        clock: Callable[[], float] = time.time,
        market: Callable[[str], tuple[int, int] | None] | None = None,
    ) -> None:
        self.specs = {s.symbol: s for s in specs}
        self.trades = trades
        self.aggs = aggs
        self.limiter = WeightLimiter(weight_limit, clock)
        self.clock = clock
        self.extra = extra or {}  # non-Binance JSON endpoints, e.g. /sim/stats
        # a symbol's (market start, horizon) in ms, None before its market started (klines)
        self.market = market or (lambda symbol: None)
        self._micros = False  # the time unit of the request being answered
        self.requests = 0
        self.rejected_429 = 0
        self.rejected_418 = 0

    def handle(
        self, path: str, ip: str, request_headers: Mapping[str, str] | None = None
    ) -> RestResponse:
        """Answer one GET ``path`` (with its query) from ``ip``."""
        self.requests += 1
        url = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        route = url.path.rstrip("/")
        if route in self.extra:
            return _json(200, self.extra[route]())
        weight = WEIGHTS.get(route)
        if weight is None:
            return _json(404, {"code": -1000, "msg": f"Unknown endpoint {route}."})
        status, used, retry_after = self.limiter.charge(ip, weight)
        headers = {"X-MBX-USED-WEIGHT-1M": str(used), "X-MBX-USED-WEIGHT": str(used)}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
            if status == 418:
                self.rejected_418 += 1
                until = int(self.clock() + retry_after) * 1000
                msg = f"Way too much request weight used; IP banned until {until}. Please use "
                msg += "WebSocket Streams for live updates to avoid bans."
            else:
                self.rejected_429 += 1
                msg = (
                    f"Too much request weight used; current limit is {self.limiter.limit} "
                    "request weight per 1 MINUTE. Please use WebSocket Streams for live updates "
                    "to avoid polling the API."
                )
            return _json(status, {"code": -1003, "msg": msg}, headers)
        try:
            self._micros = _time_unit(query, request_headers or {})
            body = getattr(self, "_" + route.rsplit("/", 1)[1])(query)
        except ApiError as e:
            return _json(e.status, {"code": e.code, "msg": e.msg}, headers)
        return _json(200, body, headers)

    # --- endpoints (names are the last path segment)
    def _ping(self, query: dict[str, str]) -> dict:
        return {}

    def _now(self) -> int:
        return int(self.clock() * (1_000_000 if self._micros else 1000))

    def _time(self, query: dict[str, str]) -> dict:
        return {"serverTime": self._now()}

    def _exchangeInfo(self, query: dict[str, str]) -> dict:  # noqa: N802 (Binance's name)
        wanted = list(self.specs)
        if "symbol" in query:
            wanted = [self._symbol(query)]
        elif "symbols" in query:
            try:
                wanted = [str(s) for s in json.loads(query["symbols"])]
            except (ValueError, TypeError) as e:
                raise ApiError(
                    400, -1100, "Illegal characters found in parameter 'symbols'."
                ) from e
            for s in wanted:
                if s not in self.specs:
                    raise ApiError(400, -1121, "Invalid symbol.")
        return {
            "timezone": "UTC",
            "serverTime": self._now(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.limiter.limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            "symbols": [symbol_info(self.specs[s]) for s in wanted],
        }

    def _trades(self, query: dict[str, str]) -> list[dict]:
        symbol = self._symbol(query)
        rows = self.trades[symbol].recent(self._limit(query))
        return [trade_json(t, self._micros) for t in rows]

    def _historicalTrades(self, query: dict[str, str]) -> list[dict]:  # noqa: N802
        symbol = self._symbol(query)
        limit = self._limit(query)
        history = self.trades[symbol]
        if "fromId" in query:
            rows = history.from_id(self._int(query, "fromId"), limit)
        else:
            rows = history.recent(limit)
        return [trade_json(t, self._micros) for t in rows]

    def _aggTrades(self, query: dict[str, str]) -> list[dict]:  # noqa: N802
        symbol = self._symbol(query)
        limit = self._limit(query)
        history = self.aggs[symbol]
        if "fromId" in query:
            rows = history.from_id(self._int(query, "fromId"), limit)
        elif "startTime" in query or "endTime" in query:
            start = self._time_param(query, "startTime", end=False)
            end = self._time_param(query, "endTime", end=True)
            rows = history.between(start, end, limit)
        else:
            rows = history.recent(limit)
        return [agg_json(a, self._micros) for a in rows]

    def _klines(self, query: dict[str, str]) -> list[list]:
        """Closed 1 m klines computed from retained trades (``klines.closed_klines``)."""
        symbol = self._symbol(query)
        interval = query.get("interval", "")
        if not interval:
            raise ApiError(
                400,
                -1102,
                "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.",
            )
        if interval != "1m":
            raise ApiError(400, -1120, "Invalid interval.")
        limit = self._limit(query)
        start_us = self._time_param(query, "startTime", end=False)
        end_us = self._time_param(query, "endTime", end=True)
        market = self.market(symbol)
        if market is None:
            return []
        klines = closed_klines(
            self.trades[symbol],
            self.specs[symbol],
            market,
            None if start_us is None else -(-start_us // 1000),
            None if end_us is None else end_us // 1000,
            limit,
        )
        return [k.rest_row(self._micros) for k in klines]

    # --- parameters
    def _symbol(self, query: dict[str, str]) -> str:
        symbol = query.get("symbol", "")
        if not symbol:
            raise ApiError(
                400,
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        if symbol not in self.specs:
            raise ApiError(400, -1121, "Invalid symbol.")
        return symbol

    def _limit(self, query: dict[str, str]) -> int:
        if "limit" not in query:
            return DEFAULT_LIMIT
        limit = self._int(query, "limit")
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        return limit

    def _time_param(self, query: dict[str, str], name: str, end: bool) -> int | None:
        """A time parameter in µs (Binance takes ms or µs); an ``end`` in ms covers its whole
        millisecond."""
        if name not in query:
            return None
        value = self._int(query, name)
        if value >= MICROS_FROM:
            return value
        return value * 1000 + (999 if end else 0)

    @staticmethod
    def _int(query: dict[str, str], name: str) -> int:
        raw = query[name]
        if not raw.isdigit() or len(raw) > 20:
            raise ApiError(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^[0-9]{1,20}$'.",
            )
        return int(raw)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> RestResponse:
    data = json.dumps(body, separators=(",", ":")).encode()
    return RestResponse(status, data, dict(headers or {}))


def _time_unit(query: dict[str, str], headers: Mapping[str, str]) -> bool:
    """Whether a request asks for microseconds (``timeUnit`` query or ``X-MBX-TIME-UNIT``)."""
    unit = query.get("timeUnit")
    if unit is None:
        unit = next((v for k, v in headers.items() if k.lower() == "x-mbx-time-unit"), None)
    if unit is None:
        return False
    if unit not in TIME_UNITS:
        raise ApiError(400, -1100, f"Invalid time unit {unit!r}: use MILLISECOND or MICROSECOND.")
    return TIME_UNITS[unit]
