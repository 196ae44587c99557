"""The REST endpoints that fill a stream's gaps, by the name the registry gives
(``Continuity.backfill``): how to ask for the records ``first..last``, each row's id, whether a
row is final yet, and the frame a row becomes (Binance's exact WebSocket serialisation, so
bronze and silver see one shape whatever the source).

Ids are in the stream's own terms (trade id, aggregate id, kline open time in ms or µs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptoflow.core.errors import ConfigError
from cryptoflow.core.streams import MICROS_FROM
from ingestion.exchange_frames import kline_frame, rest_agg_trade_frame
from ingestion.frames import rest_trade_frame

PAGE = 1000  # rows per request: the most Binance serves


def interval(first: int, step: int) -> str:
    """Binance's interval name (``1m``) of a kline step, the open time ``first`` telling the
    unit (ms or µs)."""
    ms = step // 1000 if first >= MICROS_FROM else step
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    raise ConfigError(f"a kline step of {ms} ms has no Binance interval")


def _count(first: int, last: int, step: int) -> int:
    return max(1, min(PAGE, (last - first) // step + 1))


@dataclass(frozen=True)
class Endpoint:
    """One backfill endpoint. ``params(symbol, first, last, step)``: the query of the page
    starting at ``first``; ``row_id(row)``; ``frame(symbol, row, first, step)``: the row as a
    stream frame; ``final(row, now)``: whether the row is complete at ``now`` (epoch in the
    unit of the ids), false for the kline still open."""

    name: str
    path: str
    weight: int
    params: Callable[[str, int, int, int], dict[str, Any]]
    row_id: Callable[[Any], int]
    frame: Callable[[str, Any, int, int], bytes]
    final: Callable[[Any, int], bool] = lambda row, now: True


def _by_id(symbol: str, first: int, last: int, step: int) -> dict[str, Any]:
    return {"symbol": symbol, "fromId": first, "limit": _count(first, last, step)}


def _klines(symbol: str, first: int, last: int, step: int) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "interval": interval(first, step),
        "startTime": first,
        "endTime": last,
        "limit": _count(first, last, step),
    }


def endpoints(historical_trades_weight: int) -> dict[str, Endpoint]:
    """The endpoints by name; request weights as Binance counts them (2025)."""
    return {
        e.name: e
        for e in (
            Endpoint(
                "historicalTrades",
                "/api/v3/historicalTrades",
                historical_trades_weight,
                _by_id,
                lambda row: int(row["id"]),
                lambda symbol, row, first, step: rest_trade_frame(symbol, row),
            ),
            Endpoint(
                "aggTrades",
                "/api/v3/aggTrades",
                4,
                _by_id,
                lambda row: int(row["a"]),
                lambda symbol, row, first, step: rest_agg_trade_frame(symbol, row),
            ),
            Endpoint(
                "klines",
                "/api/v3/klines",
                2,
                _klines,
                lambda row: int(row[0]),
                lambda symbol, row, first, step: kline_frame(
                    symbol, row, interval(first, step), closed=True
                ),
                lambda row, now: int(row[6]) < now,
            ),
        )
    }
