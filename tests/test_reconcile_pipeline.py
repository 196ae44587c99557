"""Reconciliation end to end through the pipeline: a trade lost between the exchange and
Kafka (never produced, as a frame dropped by ingestion with gap backfill off) makes the
minute's candle differ from the exchange's own closed kline, and reconciliation names that
minute and the fields that differ, with both values; a complete minute matches."""

from __future__ import annotations

import json
import time
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from cryptoflow.core.services import kafka
from cryptoflow.core.streams import KLINE_1M
from ingestion.exchange_frames import kline_frame
from pipelines import job
from tests.pipeline_helpers import frame, isolated, pg_rows, produce, trade

pytestmark = pytest.mark.integration


def kline_of(symbol: str, open_ms: int, trades: list[dict]) -> bytes:
    """The exchange's closed 1 m kline of ``trades`` (Binance's definition, quote volumes
    rounded to 8 decimals as the exchange prints them), as a combined-stream frame."""
    by_id = sorted(trades, key=lambda t: t["t"])
    prices = [Decimal(t["p"]) for t in by_id]
    qty = [Decimal(t["q"]) for t in by_id]
    buy = [not t["m"] for t in by_id]
    eight = Decimal("1E-8")
    quote = sum((p * q for p, q in zip(prices, qty, strict=True)), Decimal(0))
    buy_quote = sum((p * q for p, q, b in zip(prices, qty, buy, strict=True) if b), Decimal(0))
    row = [
        open_ms, str(prices[0]), str(max(prices)), str(min(prices)), str(prices[-1]),
        str(sum(qty)), open_ms + 59_999, str(quote.quantize(eight, ROUND_HALF_EVEN)),
        len(by_id), str(sum((q for q, b in zip(qty, buy, strict=True) if b), Decimal(0))),
        str(buy_quote.quantize(eight, ROUND_HALF_EVEN)), "0",
    ]  # fmt: skip
    data = json.loads(kline_frame(symbol, row, event_time=open_ms + 60_000))
    data["data"]["k"]["f"], data["data"]["k"]["L"] = by_id[0]["t"], by_id[-1]["t"]
    return json.dumps(data, separators=(",", ":")).encode()


def test_a_trade_lost_before_kafka_is_named_by_reconciliation(spark, settings, unique, tmp_path):
    s = isolated(settings, unique, tmp_path).replace(streams="trade,kline_1m")
    kafka.ensure_topic(s, s.topic(KLINE_1M))
    symbol = s.symbols[0]
    minute_ms = (int(time.time()) // 60 - 3) * 60_000  # a closed minute, well in the past
    minutes = {}
    for m in range(2):
        start = minute_ms + m * 60_000
        minutes[start] = [
            trade(symbol, 100 * (m + 1) + i, f"{90000 + (i * 37) % 11}.{i:08d}",
                  f"0.{(i * 7919) % 99_999_999 + 1:08d}", start + 1_000 * i, i % 3 == 0)
            for i in range(12)
        ]  # fmt: skip
    lost = minutes[minute_ms][5]  # dropped on its way to Kafka: the exchange still counts it
    sent = [t for ts in minutes.values() for t in ts if t is not lost]
    produce(s, [(t["s"].encode(), frame(t)) for t in sent], int(time.time() * 1000))
    klines = [(symbol.encode(), kline_of(symbol, start, ts)) for start, ts in minutes.items()]
    produce(s, klines, int(time.time() * 1000), topic=s.topic(KLINE_1M))

    job.drain(spark, s)

    rows = pg_rows(
        s,
        "SELECT (extract(epoch FROM minute) * 1000)::bigint, status, differences "
        "FROM reconciliation WHERE symbol = %s ORDER BY minute",
        (symbol,),
    )
    by_minute = {r[0]: (r[1], r[2]) for r in rows}
    assert by_minute[minute_ms + 60_000] == ("match", {})
    status, differences = by_minute[minute_ms]
    assert status == "mismatch"
    # One trade fewer: its count, base and quote volumes differ (and both values are given).
    assert {"trades", "volume", "quote_volume"} <= differences.keys()
    assert differences["trades"] == {"ours": "11", "exchange": "12"}
    assert differences["volume"]["exchange"] == str(
        sum(Decimal(t["q"]) for t in minutes[minute_ms])
    )
    # The exchange's kline itself is served and final.
    (closed,) = pg_rows(
        s,
        "SELECT count(*) FROM exchange_klines WHERE symbol = %s AND is_closed",
        (symbol,),
    )
    assert closed == (2,)
