"""Serving-transaction helpers for gold tests: trades staged and folded through the real
PostgreSQL as the pipeline's writer login, exchange klines and aggregates upserted, rows read
back as dicts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import psycopg2.extensions

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.services.postgres import pipeline_dsn
from pipelines.gold.candles import CandleInterval, parse_intervals
from pipelines.gold.fold import Folded, fetch_dicts, fold_batch
from pipelines.serving import stage_rows
from pipelines.silver.tables import RAW_TRADES

T = TypeVar("T")
INTERVALS = parse_intervals("1s,1m,5m,1h")
LENGTHS = (5, 60)


def at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def in_tx(settings: Settings, work: Callable[[psycopg2.extensions.cursor], T]) -> T:
    """``work(cursor)`` in one committed transaction of the pipeline's writer login."""
    conn = connect(pipeline_dsn(settings))
    try:
        with conn, conn.cursor() as cur:
            return work(cur)
    finally:
        conn.close()


def trade_row(t: Mapping[str, Any]) -> tuple:
    """A raw_trades row (``RAW_TRADES.columns``) of a trade payload."""
    values = {
        "symbol": t["s"], "trade_id": t["t"], "price": t["p"], "quantity": t["q"],
        "is_buyer_maker": t["m"], "event_time": at(t["E"]), "trade_time": at(t["T"]),
        "ingestion_time": at(t["E"] + 5), "spark_time": at(t["E"] + 9),
        "exchange_latency_ms": 3, "source_latency_ms": 5, "end_to_end_latency_ms": 9,
        "source": "test", "kafka_partition": 0, "kafka_offset": t["t"],
    }  # fmt: skip
    return tuple(values[c] for c in RAW_TRADES.columns)


def fold_cur(
    cur: psycopg2.extensions.cursor,
    lake: str,
    payloads: Sequence[Mapping[str, Any]],
    intervals: Sequence[CandleInterval] = INTERVALS,
) -> Folded:
    stage = stage_rows(cur, RAW_TRADES, [trade_row(t) for t in payloads])
    return fold_batch(cur, RAW_TRADES.columns, stage, lake, LENGTHS, intervals)


def fold(
    settings: Settings,
    lake: str,
    payloads: Sequence[Mapping[str, Any]],
    intervals: Sequence[CandleInterval] = INTERVALS,
) -> Folded:
    """One batch's fold of ``payloads``, committed."""
    return in_tx(settings, lambda cur: fold_cur(cur, lake, payloads, intervals))


def rows(settings: Settings, query: str, params: Any = ()) -> list[dict[str, Any]]:
    def read(cur: psycopg2.extensions.cursor) -> list[dict[str, Any]]:
        cur.execute(query, params)
        return fetch_dicts(cur)

    return in_tx(settings, read)


def kline(candle: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """An exchange_klines row equal to ``candle`` (an oracle candle of 1 m), closed, with
    ``changes``; quote volumes as the exchange gives them (8 decimals, half-even)."""
    row = {k: candle[k] for k in ("symbol", "open_time", "close_time", "open", "high", "low",
                                  "close", "volume", "trades", "taker_buy_volume",
                                  "first_trade_id", "last_trade_id")}  # fmt: skip
    for name in ("quote_volume", "taker_buy_quote_volume"):
        row[name] = Decimal(candle[name]).quantize(Decimal("1E-8"))
    row.update(interval="1m", is_closed=True)
    row.update(changes)
    return row


def upsert_klines(cur: psycopg2.extensions.cursor, klines: Iterable[Mapping[str, Any]]) -> None:
    """The exchange's klines as the batch would upsert them (closed ones final)."""
    for k in klines:
        cur.execute(
            "INSERT INTO exchange_klines (symbol, interval, open_time, close_time, open, high,"
            " low, close, volume, quote_volume, trades, taker_buy_volume,"
            " taker_buy_quote_volume, first_trade_id, last_trade_id, is_closed, event_time,"
            " ingestion_time, spark_time) VALUES (%(symbol)s, %(interval)s, %(open_time)s,"
            " %(close_time)s, %(open)s, %(high)s, %(low)s, %(close)s, %(volume)s,"
            " %(quote_volume)s, %(trades)s, %(taker_buy_volume)s, %(taker_buy_quote_volume)s,"
            " %(first_trade_id)s, %(last_trade_id)s, %(is_closed)s, %(close_time)s,"
            " %(close_time)s, %(close_time)s)"
            " ON CONFLICT (symbol, interval, open_time) DO UPDATE SET high = EXCLUDED.high,"
            " trades = EXCLUDED.trades, is_closed = EXCLUDED.is_closed",
            dict(k),
        )
