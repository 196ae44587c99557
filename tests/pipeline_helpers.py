"""Helpers shared by the pipeline tests: crafted frames, producing, reading back."""

from __future__ import annotations

import json
import time
from decimal import Decimal

from confluent_kafka import Producer

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.services import kafka
from cryptoflow.core.services.postgres import admin_dsn

# Trades a little in the past, so latencies stay within the expectation suite's bounds.
BASE_MS = int(time.time() * 1000) - 20_000


def trade(symbol: str, trade_id: int, price: str, qty: str, t_ms: int, maker: bool) -> dict:
    """A Binance @trade payload (p/q as strings, like the exchange)."""
    return {"e": "trade", "E": t_ms + 3, "s": symbol, "t": trade_id, "p": price, "q": qty,
            "T": t_ms, "m": maker, "M": True}  # fmt: skip


def frame(payload: dict) -> bytes:
    stream = f"{payload['s'].lower()}@trade"
    return json.dumps({"stream": stream, "data": payload}, separators=(",", ":")).encode()


def trades(n: int, symbols, start_id: int = 1) -> list[dict]:
    """``n`` valid trades, ids consecutive per symbol, prices with 8 decimals."""
    out = []
    for i in range(n):
        sym = symbols[i % len(symbols)]
        tid = start_id + i // len(symbols)
        price = f"{90000 + i}.{i % 100_000_000:08d}"
        out.append(
            trade(sym, tid, price, f"0.{(i * 7919) % 99_999_999 + 1:08d}", BASE_MS + i, i % 3 == 0)
        )
    return out


def produce(
    settings: Settings,
    records: list[tuple[bytes | None, bytes]],
    ts_ms: int | None = None,
    topic: str | None = None,
) -> None:
    """Produce (key, value) records with a source header to ``topic`` (default: the trade
    topic); the record timestamp is ts_ms."""
    p = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5})
    for key, value in records:
        p.produce(topic or settings.kafka_topic, value=value, key=key, timestamp=ts_ms or 0,
                  headers=[("source", b"simulator"), ("connection", b"test")])  # fmt: skip
    assert p.flush(30) == 0


def produce_trades(settings: Settings, payloads: list[dict], ts_ms: int | None = None) -> None:
    produce(settings, [(t["s"].encode(), frame(t)) for t in payloads], ts_ms)


def isolated(settings: Settings, unique: str, tmp_path, partitions: int = 2) -> Settings:
    """Settings with a fresh topic, lake, checkpoints and symbols (raw_trades is shared).
    Trades only: a test of the other stream kinds chooses them (``.replace(streams=...)``),
    the others do not pay for three more topics and silver tables per batch."""
    u = unique.upper()
    s = settings.replace(
        streams="trade",
        symbols=[f"A{u}USDT", f"B{u}USDT"],
        kafka_topic_prefix=f"test.raw.{unique}",
        lake_root=str(tmp_path / "lake"),
        checkpoint_root=str(tmp_path / "checkpoints"),
        trigger_interval_ms=200,
    )
    kafka.ensure_topic(s, partitions=partitions)
    return s


def pg_rows(settings: Settings, query: str, params=()) -> list[tuple]:
    conn = connect(admin_dsn(settings))
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        conn.close()


def pg_trades(settings: Settings, symbols) -> dict[tuple[str, int], tuple]:
    """(symbol, trade_id) -> (price, quantity, is_buyer_maker, trade_time ms, event_time ms)."""
    rows = pg_rows(
        settings,
        "SELECT symbol, trade_id, price, quantity, is_buyer_maker, "
        "(extract(epoch FROM trade_time) * 1000)::bigint, "
        "(extract(epoch FROM event_time) * 1000)::bigint FROM raw_trades WHERE symbol = ANY(%s)",
        (list(symbols),),
    )
    return {(r[0], r[1]): r[2:] for r in rows}


def expected(payloads: list[dict]) -> dict[tuple[str, int], tuple]:
    return {
        (t["s"], t["t"]): (Decimal(t["p"]), Decimal(t["q"]), t["m"], t["T"], t["E"])
        for t in payloads
    }


def env_for(settings: Settings) -> dict[str, str]:
    """Environment that makes a ``cryptoflow`` subprocess use exactly these settings."""
    import dataclasses
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOFLOW_")}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"CRYPTOFLOW_{f.name.upper()}"] = str(value)
    return env
