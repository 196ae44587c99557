"""Serving-table rows for dashboard tests, derived from a seeded trade generator.

Used until a short simulated pipeline run can fill the tables: trades follow a random walk
ending "now", ``metrics`` rows are their 5-second windows computed with the definitions of
DESIGN.md (exact decimals), both written with the pipeline's least-privilege login.
"""

from __future__ import annotations

import json
import random
import statistics
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from psycopg2.extras import execute_values

from cryptoflow.db import connect

START_PRICES = {"BTCUSDT": Decimal("90000"), "ETHUSDT": Decimal("3000"), "BNBUSDT": Decimal("600")}
Q8 = Decimal("0.00000001")


@dataclass(frozen=True)
class Trade:
    symbol: str
    trade_id: int
    price: Decimal
    quantity: Decimal
    is_buyer_maker: bool
    trade_time: datetime
    exchange_ms: int
    source_ms: int
    e2e_ms: int
    serving_ms: int


def generate(seconds: int, per_second: int, end: datetime, seed: int = 7) -> list[Trade]:
    """``per_second`` trades a second per symbol over the ``seconds`` before ``end``."""
    rnd = random.Random(seed)
    trades: list[Trade] = []
    for n, (symbol, price) in enumerate(START_PRICES.items()):
        for i in range(seconds * per_second):
            price = (price * Decimal(1 + rnd.gauss(0, 0.0004))).quantize(Q8, ROUND_HALF_EVEN)
            qty = Decimal(str(round(rnd.uniform(0.0005, 0.5), 6))).quantize(Q8)
            t = end - timedelta(seconds=seconds) + timedelta(milliseconds=1000 * i / per_second)
            source = rnd.randint(2, 40)
            e2e = source + rnd.randint(200, 3000)
            trades.append(
                Trade(symbol, 1_000_000 * (n + 1) + i, price, qty, rnd.random() < 0.5,
                      t.replace(microsecond=t.microsecond // 1000 * 1000),
                      source - rnd.randint(0, 2), source, e2e, e2e + rnd.randint(20, 400))
            )  # fmt: skip
    return trades


def windows(trades: list[Trade], window_s: int) -> list[tuple]:
    """``metrics`` rows (DESIGN.md definitions) of the complete windows of ``trades``."""
    groups: dict[tuple[str, datetime], list[Trade]] = {}
    for tr in trades:
        epoch = int(tr.trade_time.timestamp()) // window_s * window_s
        groups.setdefault((tr.symbol, datetime.fromtimestamp(epoch, UTC)), []).append(tr)
    rows = []
    for (symbol, start), ts in sorted(groups.items()):
        prices = [t.price for t in ts]
        volume = sum((t.quantity for t in ts), Decimal(0))
        buy = sum((t.quantity for t in ts if not t.is_buyer_maker), Decimal(0))
        sell = volume - buy
        n = len(ts)
        rows.append((
            symbol, start, start + timedelta(seconds=window_s), n, volume,
            sum(prices, Decimal(0)) / n, min(prices), max(prices),
            statistics.stdev(prices) if n > 1 else None,
            sum((t.price * t.quantity for t in ts), Decimal(0)) / volume,
            buy, sell, buy / sell if sell else None,
            Decimal(n) / window_s, volume / window_s,
            Decimal(sum(t.exchange_ms for t in ts)) / n,
            Decimal(sum(t.source_ms for t in ts)) / n,
            Decimal(sum(t.e2e_ms for t in ts)) / n,
        ))  # fmt: skip
    return rows


def fill(dsn: str, seconds: int = 90, per_second: int = 4, window_s: int = 5) -> int:
    """Write generated trades and their metrics ending now; returns the number of trades."""
    trades = generate(seconds, per_second, datetime.now(UTC))
    ms = timedelta(milliseconds=1)
    trade_rows = [
        (t.symbol, t.trade_id, t.price, t.quantity, t.is_buyer_maker,
         t.trade_time + t.exchange_ms * ms - t.source_ms * ms, t.trade_time,
         t.trade_time + t.source_ms * ms, t.trade_time + t.e2e_ms * ms,
         t.exchange_ms, t.source_ms, t.e2e_ms, "simulator", 0, i,
         t.trade_time + t.serving_ms * ms)
        for i, t in enumerate(trades)
    ]  # fmt: skip
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            execute_values(
                cur,
                """INSERT INTO raw_trades (symbol, trade_id, price, quantity, is_buyer_maker,
                       event_time, trade_time, ingestion_time, spark_time, exchange_latency_ms,
                       source_latency_ms, end_to_end_latency_ms, source, kafka_partition,
                       kafka_offset, mirrored_at) VALUES %s
                   ON CONFLICT (symbol, trade_id) DO UPDATE SET trade_time = EXCLUDED.trade_time,
                       event_time = EXCLUDED.event_time, mirrored_at = EXCLUDED.mirrored_at""",
                trade_rows,
            )
            execute_values(
                cur,
                """INSERT INTO metrics (symbol, window_start, window_end, trade_count,
                       total_volume, avg_price, min_price, max_price, price_stddev, vwap,
                       buy_volume, sell_volume, buy_sell_ratio, trade_intensity, liquidity_proxy,
                       avg_exchange_latency_ms, avg_source_latency_ms, avg_end_to_end_latency_ms)
                   VALUES %s ON CONFLICT (symbol, window_start, window_end) DO NOTHING""",
                windows(trades, window_s),
            )
            execute_values(
                cur,
                """INSERT INTO quarantine (raw_value, kafka_key, topic, kafka_partition,
                       kafka_offset, kafka_timestamp, source, symbol, trade_id,
                       failed_expectations, quarantined_at) VALUES %s
                   ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING""",
                quarantine_rows(trades),
            )
            cur.execute("SELECT to_regclass('pipeline_batches'), to_regclass('dq_results')")
            has_batches, has_dq = cur.fetchone()
            if has_batches:
                execute_values(
                    cur,
                    """INSERT INTO pipeline_batches (job, batch_id, input_rows, output_rows,
                           quarantined, late, duration_ms, latency_p50_ms, latency_p99_ms,
                           kafka_lag, batch_time, recorded_at) VALUES %s
                       ON CONFLICT (job, batch_id) DO NOTHING""",
                    batch_rows(trades),
                )
            if has_dq:
                execute_values(
                    cur,
                    """INSERT INTO dq_results (run_id, suite, table_name, delta_version, success,
                           rows_validated, expectations_evaluated, expectations_failed, results,
                           started_at, duration_ms) VALUES %s""",
                    dq_rows(trades),
                )
    finally:
        conn.close()
    return len(trades)


def batch_rows(trades: list[Trade], every_s: int = 5) -> list[tuple]:
    """One ``pipeline_batches`` row per job and ``every_s`` seconds of trades."""
    rows = []
    start = trades[0].trade_time
    by_bucket: dict[int, list[Trade]] = {}
    for t in trades:
        by_bucket.setdefault(int((t.trade_time - start).total_seconds()) // every_s, []).append(t)
    base = int(start.timestamp())  # batch ids grow with time, so a later fill adds batches
    for n, ts in sorted(by_bucket.items()):
        stamp = ts[-1].trade_time + timedelta(milliseconds=ts[-1].serving_ms)
        e2e = sorted(t.e2e_ms for t in ts)
        for k, job in enumerate(("bronze", "silver", "gold")):
            rows.append((job, base + n, len(ts), len(ts) if job != "gold" else len(ts) // 20,
                         len(ts) // 40 if job == "silver" else 0, 0, 300 + 150 * k + n % 7 * 20,
                         e2e[len(e2e) // 2], e2e[int(len(e2e) * 0.99)],
                         n % 3 if job == "bronze" else None, stamp, stamp))  # fmt: skip
    return rows


def dq_rows(trades: list[Trade]) -> list[tuple]:
    """Two validation runs (silver trades, gold metrics) over the generated data."""
    stamp = trades[-1].trade_time
    rows = []
    for suite, table, failed in (("silver_trades", "silver", 0), ("gold_metrics", "gold", 1)):
        results = [{"rule": "price_positive", "action": "drop",
                    "type": "expect_column_values_to_be_between", "success": failed == 0,
                    "evaluated": len(trades), "unexpected": failed, "missing": 0}]  # fmt: skip
        rows.append((str(uuid.uuid4()), suite, table, len(trades) // 100, failed == 0,
                     len(trades), 1, failed, json.dumps(results), stamp, 850))  # fmt: skip
    return rows


BAD_FRAMES = (
    (b'{"stream":"btcusdt@trade","data":', ["frame_parses"]),
    (b'{"e":"trade","s":"BTCUSDT","t":1,"p":"-1.0","q":"0.1"}', ["price_positive"]),
    (b'{"e":"trade","s":"ETHUSDT","p":"1.0"}', ["trade_id_not_null", "quantity_not_null"]),
)


def quarantine_rows(trades: list[Trade], every: int = 40) -> list[tuple]:
    """A bad frame after every ``every``-th trade, each naming the expectations it failed."""
    rows = []
    for i, t in enumerate(trades[::every]):
        raw, failed = BAD_FRAMES[i % len(BAD_FRAMES)]
        stamp = t.trade_time + timedelta(milliseconds=t.e2e_ms)
        offset = int(stamp.timestamp() * 1000) * 10 + i % 10
        rows.append((raw, t.symbol, "dashboard-test", 0, offset, t.trade_time, "simulator",
                     t.symbol, None, failed, stamp))  # fmt: skip
    return rows


class GeneratedRun:
    """Stands in for a pipeline run: serving rows from the generator, ``more()`` adds newer."""

    def __init__(self, settings):
        self.settings = settings
        self.more()

    def more(self) -> None:
        from cryptoflow.services import postgres

        fill(postgres.pipeline_dsn(self.settings), window_s=self.settings.window_seconds)
