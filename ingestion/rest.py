"""Binance REST for backfill: request-weight budget, and 429 / 418 answered with Retry-After.

One client (one budget) serves every stream kind's backfill. With
``CRYPTOFLOW_BINANCE_TIME_UNIT=MICROSECOND`` every request carries Binance's
``X-MBX-TIME-UNIT: MICROSECOND`` header, so REST times come in the unit the streams use.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import CryptoflowError
from ingestion.endpoints import Endpoint, endpoints

log = logging.getLogger(__name__)

RETRYABLE_STATUS = (429, 418)
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
TIME_UNIT_HEADER = "X-MBX-TIME-UNIT"
DEFAULT_TIME_UNIT = "MILLISECOND"


class RestError(CryptoflowError):
    """A REST request failed for good (bad request, or still failing after retries)."""


class WeightBudget:
    """Request weight spent in the current clock minute, as Binance counts it.

    The exchange's ``X-MBX-USED-WEIGHT-1M`` header, when present, overrides the local tally.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.minute = int(clock() // 60)
        self.used = 0

    def wait_seconds(self, weight: int) -> float:
        """0 when ``weight`` fits in this minute, else seconds until the next minute starts."""
        now = self.clock()
        if int(now // 60) != self.minute:
            self.minute, self.used = int(now // 60), 0
        if self.used + weight <= self.per_minute:
            return 0.0
        return 60.0 - (now % 60) + 0.05

    def spend(self, weight: int, reported: int | None = None) -> None:
        self.used = reported if reported is not None else self.used + weight


class BinanceRest:
    """Blocking REST client (runs on the backfill thread); ``stop`` interrupts every wait."""

    def __init__(
        self, settings: Settings, stop: threading.Event, timeout: float = 10.0, attempts: int = 6
    ) -> None:
        self.base = settings.rest_url.rstrip("/")
        self.settings = settings
        self.stop = stop
        self.timeout = timeout
        self.attempts = attempts
        self.budget = WeightBudget(settings.rest_weight_per_minute)
        self.throttled = 0  # 429 / 418 answers received
        unit = settings.binance_time_unit
        self.headers = {TIME_UNIT_HEADER: unit} if unit != DEFAULT_TIME_UNIT else {}
        self.endpoints = endpoints(settings.rest_historical_trades_weight)

    def rows(self, endpoint: Endpoint, symbol: str, first: int, last: int, step: int) -> list:
        """One page of ``endpoint``'s rows of ``symbol`` from id ``first`` (up to ``last``)."""
        params = endpoint.params(symbol, first, last, step)
        result = self.get(endpoint.path, params, endpoint.weight)
        if not isinstance(result, list):
            raise RestError(f"{endpoint.name} for {symbol} returned {type(result).__name__}")
        return result

    def historical_trades(self, symbol: str, from_id: int, limit: int = 1000) -> list[dict]:
        """``GET /api/v3/historicalTrades``: up to ``limit`` trades with id >= ``from_id``."""
        params = {"symbol": symbol, "fromId": from_id, "limit": max(1, min(limit, 1000))}
        result = self.get(
            "/api/v3/historicalTrades", params, self.settings.rest_historical_trades_weight
        )
        if not isinstance(result, list):
            raise RestError(f"historicalTrades for {symbol} returned {type(result).__name__}")
        return result

    def get(self, path: str, params: dict, weight: int) -> object:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        delay = 0.5
        last: Exception = RestError("throttled (429/418) on every attempt")
        for attempt in range(1, self.attempts + 1):
            self._sleep(self.budget.wait_seconds(weight))
            try:
                request = urllib.request.Request(url, headers=self.headers)
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    self.budget.spend(weight, _int_header(resp.headers.get(USED_WEIGHT_HEADER)))
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                self.budget.spend(weight, _int_header(e.headers.get(USED_WEIGHT_HEADER)))
                body = e.read()[:200].decode("utf-8", "replace")
                if e.code in RETRYABLE_STATUS:
                    self.throttled += 1
                    wait = _int_header(e.headers.get("Retry-After")) or 60
                    log.warning("rest %s status=%d retry_after_s=%d", path, e.code, wait)
                    self._sleep(wait)
                    continue
                if e.code < 500:
                    raise RestError(f"GET {path} {params} failed: HTTP {e.code} {body}") from e
                last = e
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = e
            log.warning("rest %s attempt=%d failed: %s", path, attempt, last)
            self._sleep(delay)
            delay = min(delay * 2, 10.0)
        raise RestError(f"GET {self.base}{path} failed {self.attempts} times: {last}")

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.stop.wait(seconds):
            raise RestError("stopped while waiting for REST")


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
