"""Test data for gold: Binance trade payloads, and silver Delta rows made from them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from pipelines.silver.tables import SILVER_SCHEMA

#: 2023-11-15 00:00:00 UTC in ms: data around it crosses a trade_date partition boundary.
MIDNIGHT_MS = 1_700_006_400_000


def _ts(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def trade(symbol: str, trade_id: int, price: str, qty: str, trade_ms: int, m: bool) -> dict:
    """A Binance @trade payload (``E`` a few ms after ``T``)."""
    return {
        "e": "trade", "E": trade_ms + 2, "s": symbol, "t": trade_id, "p": price, "q": qty,
        "T": trade_ms, "m": m, "M": True,
    }  # fmt: skip


def random_trades(
    rng: random.Random,
    symbols: list[str],
    count: int,
    start_ms: int,
    span_ms: int,
    first_id: int = 1,
) -> list[dict]:
    """``count`` trades spread over ``[start_ms, start_ms + span_ms)`` with 8-place decimals,
    ids per symbol counting from ``first_id``."""
    out = []
    next_id = dict.fromkeys(symbols, first_id)
    for _ in range(count):
        s = rng.choice(symbols)
        price = Decimal(rng.randint(1, 9_000_000_000_000)) / Decimal(10**8)
        qty = Decimal(rng.randint(1, 500_000_000)) / Decimal(10**8)
        out.append(
            trade(s, next_id[s], f"{price:.8f}", f"{qty:.8f}",
                  start_ms + rng.randrange(span_ms), rng.random() < 0.5)
        )  # fmt: skip
        next_id[s] += 1
    return out


def latencies(trades: list[dict], rng: random.Random | None = None) -> dict:
    """Per-trade latency inputs ((symbol, id) -> columns), some exchange latencies NULL."""
    rng = rng or random.Random(1)
    out = {}
    for t in trades:
        source = rng.randint(1, 900)
        out[(t["s"], t["t"])] = {
            "exchange_latency_ms": None if rng.random() < 0.1 else source - 2,
            "source_latency_ms": source,
            "end_to_end_latency_ms": source + rng.randint(5, 400),
        }
    return out


def silver_rows(trades: list[dict], lat: dict) -> list[tuple[Any, ...]]:
    """Silver rows (``SILVER_SCHEMA`` order) for payloads and their latencies."""
    rows = []
    for offset, t in enumerate(trades):
        L = lat[(t["s"], t["t"])]
        ingestion = t["T"] + L["source_latency_ms"]
        rows.append(
            (
                t["s"], t["t"], Decimal(t["p"]), Decimal(t["q"]), t["m"], _ts(t["E"]),
                _ts(t["T"]), _ts(ingestion), _ts(t["T"] + L["end_to_end_latency_ms"]),
                L["exchange_latency_ms"], L["source_latency_ms"], L["end_to_end_latency_ms"],
                "simulator", 0, offset, _ts(t["T"]).date(),
            )
        )  # fmt: skip
    return rows


def silver_frame(spark: SparkSession, trades: list[dict], lat: dict) -> DataFrame:
    return spark.createDataFrame(silver_rows(trades, lat), schema=SILVER_SCHEMA)


def append_silver(spark: SparkSession, path: str, trades: list[dict], lat: dict) -> None:
    """Append trades to a silver Delta table (created on first write, by trade_date)."""
    (
        silver_frame(spark, trades, lat)
        .write.format("delta")
        .mode("append")
        .partitionBy("trade_date")
        .save(path)
    )
