"""Benchmark: the gold job alone, from a pre-filled silver Delta table to Delta gold + Postgres.

1. drain: ``--trades`` silver trades (three symbols, one trade per ms of trade time) written
   in ``--commits`` Delta commits, then gold with ``available_now``: trades/s.
2. live-like: gold running, ``--steps`` appends of ``--step-trades`` newer trades each (one
   of them a late trade a minute old); time from append to processed, per step.

    .venv/bin/python bench/bench_gold.py --trades 200000 --commits 20
"""

from __future__ import annotations

import argparse
import os
import time

from pyspark.sql import functions as F
from stack import percentile, private_stack, save

from cryptoflow.spark import get_spark
from pipelines.gold import job

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")


def silver_trades(spark, first_id: int, n: int, t0_ms: int, seed: int):
    """``n`` silver rows with ids from ``first_id``; trade time t0 + id ms."""
    ms = F.lit(t0_ms) + F.col("id")
    sym = F.element_at(F.array(*[F.lit(s) for s in SYMBOLS]), (F.col("id") % 3 + 1).cast("int"))
    ts = F.timestamp_millis
    return spark.range(first_id, first_id + n).select(
        sym.alias("symbol"),
        F.col("id").alias("trade_id"),
        (F.lit(90_000) + F.rand(seed) * 100).cast("decimal(18,8)").alias("price"),
        (F.rand(seed + 1) + F.lit(0.00000001)).cast("decimal(18,8)").alias("quantity"),
        (F.rand(seed + 2) < 0.5).alias("is_buyer_maker"),
        ts(ms + 2).alias("event_time"),
        ts(ms).alias("trade_time"),
        ts(ms + 50).alias("ingestion_time"),
        ts(ms + 300).alias("spark_time"),
        F.lit(48).cast("long").alias("exchange_latency_ms"),
        F.lit(50).cast("long").alias("source_latency_ms"),
        F.lit(300).cast("long").alias("end_to_end_latency_ms"),
        F.lit("bench").alias("source"),
        F.lit(0).alias("kafka_partition"),
        F.col("id").alias("kafka_offset"),
        F.to_date(ts(ms)).alias("trade_date"),
    )


def append(spark, s, df) -> None:
    df.write.format("delta").mode("append").partitionBy("trade_date").save(s.table_path("silver"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=200_000, help="silver trades to drain")
    ap.add_argument("--commits", type=int, default=20, help="silver commits they arrive in")
    ap.add_argument("--steps", type=int, default=10, help="live-like appends after the drain")
    ap.add_argument("--step-trades", type=int, default=2_000, help="trades per live-like append")
    args = ap.parse_args()
    with private_stack() as s:
        spark = get_spark(s, "bench-gold")
        t0 = int(time.time() * 1000) - args.trades - 60_000
        per = args.trades // args.commits
        for i in range(args.commits):
            append(spark, s, silver_trades(spark, i * per, per, t0, i))
        started = time.monotonic()
        job.start(spark, s, available_now=True).awaitTermination()
        drain_s = time.monotonic() - started
        gold_rows = spark.read.format("delta").load(s.table_path("gold")).count()
        print(f"drain trades={per * args.commits} seconds={drain_s:.1f} "
              f"trades_per_s={per * args.commits / drain_s:.0f} gold_rows={gold_rows}")  # fmt: skip

        query = job.start(spark, s)
        steps, next_id = [], per * args.commits
        for i in range(args.steps):
            df = silver_trades(spark, next_id, args.step_trades, t0, 100 + i)
            late = silver_trades(spark, 10**9 + i, 1, t0 - 10**9 - i, 200 + i)  # late: at t0
            started = time.monotonic()
            append(spark, s, df.unionByName(late))
            query.processAllAvailable()
            steps.append(time.monotonic() - started)
            next_id += args.step_trades
        query.stop()
        result = {
            "trades": per * args.commits,
            "commits": args.commits,
            "drain_seconds": round(drain_s, 1),
            "drain_trades_per_s": round(per * args.commits / drain_s),
            "step_trades": args.step_trades,
            "step_seconds_p50": round(percentile(steps, 0.5), 2),
            "step_seconds_max": round(max(steps), 2),
            "load_average": os.getloadavg(),
        }
        print(result)
        print("saved", save("gold", result))
        spark.stop()


if __name__ == "__main__":
    main()
