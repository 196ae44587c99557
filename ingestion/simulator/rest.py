"""Binance's public REST market-data endpoints over the simulator's history.

Answers like ``api.binance.com``: same paths, parameters, field names and error JSON
(``{"code":-1121,"msg":"Invalid symbol."}`` with HTTP 400), request weights reported in
``X-MBX-USED-WEIGHT-1M``, HTTP 429 + ``Retry-After`` beyond the per-minute weight limit and
418 (banned until the window ends) for a client that does not wait.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ingestion.simulator.exchange_info import symbol_info
from ingestion.simulator.frames import AggTrade, Trade
from ingestion.simulator.history import History
from ingestion.simulator.market import UNIT, SymbolSpec, format_units

#: Request weight per endpoint (Binance spot, 2025).
WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/trades": 25,
    "/api/v3/historicalTrades": 25,
    "/api/v3/aggTrades": 4,
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
    ) -> None:
        self.specs = {s.symbol: s for s in specs}
        self.trades = trades
        self.aggs = aggs
        self.limiter = WeightLimiter(weight_limit, clock)
        self.clock = clock
        self.extra = extra or {}  # non-Binance JSON endpoints, e.g. /sim/stats
        self.requests = 0
        self.rejected_429 = 0
        self.rejected_418 = 0

    def handle(self, path: str, ip: str) -> RestResponse:
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
            body = getattr(self, "_" + route.rsplit("/", 1)[1])(query)
        except ApiError as e:
            return _json(e.status, {"code": e.code, "msg": e.msg}, headers)
        return _json(200, body, headers)

    # --- endpoints (names are the last path segment)
    def _ping(self, query: dict[str, str]) -> dict:
        return {}

    def _time(self, query: dict[str, str]) -> dict:
        return {"serverTime": int(self.clock() * 1000)}

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
            "serverTime": int(self.clock() * 1000),
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
        return [trade_json(t) for t in self.trades[symbol].recent(self._limit(query))]

    def _historicalTrades(self, query: dict[str, str]) -> list[dict]:  # noqa: N802
        symbol = self._symbol(query)
        limit = self._limit(query)
        history = self.trades[symbol]
        if "fromId" in query:
            rows = history.from_id(self._int(query, "fromId"), limit)
        else:
            rows = history.recent(limit)
        return [trade_json(t) for t in rows]

    def _aggTrades(self, query: dict[str, str]) -> list[dict]:  # noqa: N802
        symbol = self._symbol(query)
        limit = self._limit(query)
        history = self.aggs[symbol]
        if "fromId" in query:
            rows = history.from_id(self._int(query, "fromId"), limit)
        elif "startTime" in query or "endTime" in query:
            start = self._int(query, "startTime") if "startTime" in query else None
            end = self._int(query, "endTime") if "endTime" in query else None
            rows = history.between(start, end, limit)
        else:
            rows = history.recent(limit)
        return [agg_json(a) for a in rows]

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


def quote_qty(price: int, qty: int) -> str:
    """price * qty, exact, without trailing zeros (Binance prints ``"48.000012"``)."""
    value = Decimal(price) * Decimal(qty) / Decimal(UNIT) / Decimal(UNIT)
    text = format(value.quantize(Decimal("0.00000001")), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def trade_json(t: Trade) -> dict:
    return {
        "id": t.id,
        "price": format_units(t.price),
        "qty": format_units(t.qty),
        "quoteQty": quote_qty(t.price, t.qty),
        "time": t.time,
        "isBuyerMaker": t.is_buyer_maker,
        "isBestMatch": True,
    }


def agg_json(a: AggTrade) -> dict:
    return {
        "a": a.id,
        "p": format_units(a.price),
        "q": format_units(a.qty),
        "f": a.first_id,
        "l": a.last_id,
        "T": a.time,
        "m": a.is_buyer_maker,
        "M": True,
    }
