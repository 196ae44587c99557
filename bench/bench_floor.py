"""Benchmark: the latency floor of the required design on this machine.

The serving path the project must have (Kafka -> Spark -> Delta bronze -> a Delta stream ->
``foreachBatch`` -> PostgreSQL) with as little as possible in its second hop: no
validation, no deduplication, no commit ledger, no gold. Two queries in this process, on a
private stack:

* hop 1: the project's bronze job (``--first-hop bronze``, the default), or Kafka -> Delta
  through Delta's own streaming sink (``--first-hop delta-sink``);
* hop 2: that Delta table as a stream -> ``foreachBatch``: trade id and trade time read
  from the JSON, collected through Arrow, COPY into a PostgreSQL table, one commit a batch.

A producer thread writes ``--rate`` Binance-shaped trade frames a second, ``T`` = now. The
figure is p50 / p99 of (PostgreSQL commit time - trade_time), as in ``bench_latency.py``.
Whatever the project's own pipeline adds to it is the cost of its features; what is left
here is the cost of two Spark micro-batches and two Delta commits in series on these cores.

With ``--drain N`` it produces N trades first (as ``bench_drain.py``) and reports the rate
and CPU per trade between the first and the last PostgreSQL commit instead.

    .venv/bin/python bench/bench_floor.py --rate 30 --seconds 60 --warmup 20
    .venv/bin/python bench/bench_floor.py --drain 1000000
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path

from bench_bronze import _produce
from bench_drain import produce
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from stack import (
    StackSampler,
    commit_span_sql,
    cpu_per_trade,
    cpu_report,
    percentile,
    private_stack,
    save,
    service_pids,
)

from cryptoflow import db
from cryptoflow.services.postgres import admin_dsn
from cryptoflow.spark import get_spark
from pipelines.bronze import job as bronze
from pipelines.bronze.job import kafka_options
from pipelines.progress import stop_between_batches

TABLE = "CREATE TABLE IF NOT EXISTS floor_trades (trade_id bigint, trade_ms bigint)"
LATENCY = """
SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000 - trade_ms
FROM floor_trades WHERE pg_xact_commit_timestamp(xmin) >= %s"""


class CopyToPostgres:
    """Hop 2's ``foreachBatch``: trade id and time of each frame into ``floor_trades``."""

    def __init__(self, dsn: str) -> None:
        self.conn = db.connect(dsn)

    def __call__(self, frames, batch_id: int) -> None:
        text = frames["value"].cast("string")
        table = frames.select(
            F.get_json_object(text, "$.data.t").alias("t"),
            F.get_json_object(text, "$.data.T").alias("T"),
        ).toArrow()
        pairs = zip(table.column("t").to_pylist(), table.column("T").to_pylist(), strict=True)
        buf = io.StringIO("".join(f"{t}\t{ms}\n" for t, ms in pairs))
        with self.conn, self.conn.cursor() as cur:
            cur.copy_expert("COPY floor_trades FROM STDIN", buf)


def _batch_ms(query, since: float) -> dict[str, float]:
    """Median and longest ``triggerExecution`` of the query's batches with rows since epoch
    ``since``."""
    batches = [
        p
        for p in query.recentProgress
        if p["numInputRows"] and datetime.fromisoformat(p["timestamp"]).timestamp() >= since
    ]
    if not batches:
        return {"median": float("nan"), "max": float("nan")}
    times = [p["durationMs"]["triggerExecution"] for p in batches]
    slowest = max(batches, key=lambda p: p["durationMs"]["triggerExecution"])
    print(f"bench: {query.name}'s slowest batch {slowest['batchId']}: {slowest['durationMs']}")
    return {"median": statistics.median(times), "max": max(times)}


def _delta_sink(spark, s, checkpoint: Path, trigger: int) -> tuple[str, StreamingQuery]:
    """Kafka -> Delta through Delta's own streaming sink; returns (table path, query)."""
    path = str(Path(s.data_dir) / "floor-bronze")
    # The sink creates the table: give it the inline interval the streaming tables had
    # before their checkpoints moved to a thread (Delta's default, 10, would be far worse).
    spark.conf.set("spark.databricks.delta.properties.defaults.checkpointInterval", "100")
    query = (
        spark.readStream.format("kafka")
        .options(**kafka_options(s))
        .load()
        .select("key", "value", "topic", "partition", "offset", "timestamp")
        .writeStream.queryName("delta-sink")
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=f"{trigger} milliseconds")
        .format("delta")
        .start(path)
    )
    while not (Path(path) / "_delta_log").exists():  # hop 2 needs the table to exist
        if not query.isActive:
            raise SystemExit(f"bench: the Delta sink stopped: {query.exception()}")
        time.sleep(0.2)
    return path, query


def _start_hops(spark, s, first_hop: str, dsn: str) -> tuple[StreamingQuery, StreamingQuery]:
    chk = Path(s.data_dir) / "floor-checkpoints"
    if first_hop == "bronze":
        path, hop1 = s.table_path("bronze"), bronze.start(spark, s)
    else:
        path, hop1 = _delta_sink(spark, s, chk / "hop1", s.trigger_interval_ms)
    hop2 = (
        spark.readStream.format("delta")
        .load(path)
        .writeStream.queryName("hop2")
        .foreachBatch(CopyToPostgres(dsn))
        .option("checkpointLocation", str(chk / "hop2"))
        .trigger(processingTime=f"{s.trigger_interval_ms} milliseconds")
        .start()
    )
    return hop1, hop2


def _latency(s, dsn: str, hops, sampler: StackSampler, args) -> dict:
    """Live-like run: ``args.rate`` frames a second, latency over ``args.seconds``."""
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(s, args.rate, stop), daemon=True)
    producer.start()
    try:
        time.sleep(args.warmup)
        with db.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT now()")
            since = cur.fetchone()[0]
        measured_from = time.time()
        time.sleep(args.seconds)
        cpu = sampler.cpu_between(measured_from, time.time())
        batch_ms = {q.name: _batch_ms(q, measured_from) for q in hops}
        with db.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(LATENCY, (since,))
            lat = [float(r[0]) for r in cur.fetchall()]
    finally:
        stop.set()
        producer.join(15)
    batches = ", ".join(
        f"{name} median {ms['median']:.0f} ms, max {ms['max']:.0f} ms"
        for name, ms in batch_ms.items()
    )
    result = {"rate": args.rate, "rows": len(lat), "p50_ms": percentile(lat, 0.5),
              "p99_ms": percentile(lat, 0.99), "batch_ms": batch_ms,
              "cpu_seconds": cpu}  # fmt: skip
    print(
        f"floor (Kafka -> Delta -> Delta stream -> PostgreSQL, trigger {s.trigger_interval_ms} "
        f"ms): p50={result['p50_ms']:.0f} ms p99={result['p99_ms']:.0f} ms over {len(lat)} rows\n"
        f"batches with rows: {batches}\n"
        f"CPU over the measured period: {cpu_report(cpu, args.seconds)}"
    )
    return result


def _drain(dsn: str, hops, sampler: StackSampler, trades: int) -> dict:
    """Drain run: wait until ``floor_trades`` holds the ``trades`` produced beforehand."""
    started = time.monotonic()
    while True:
        with db.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM floor_trades")
            if cur.fetchone()[0] >= trades:
                cur.execute(commit_span_sql("floor_trades"))
                first, last, after, _ = cur.fetchone()
                break
        for q in hops:
            if not q.isActive:
                raise SystemExit(f"bench: {q.name} stopped: {q.exception()}")
        time.sleep(2)
    total = time.monotonic() - started
    span, after = float(last - first), int(after or 0)
    cpu = sampler.cpu_between(float(first), float(last))
    cpu_us, per_trade = cpu_per_trade(cpu, after)
    result = {"trades": trades, "seconds_total": total, "seconds_first_to_last_commit": span,
              "trades_per_s_steady": after / span if span else None,
              "cpu_us_per_trade_steady": cpu_us}  # fmt: skip
    print(
        f"floor drained {trades} trades in {total:.0f}s with Spark start-up; "
        f"{result['trades_per_s_steady'] or 0:.0f} trades/s between the first and the last "
        f"commit ({after} trades in {span:.1f}s)\n"
        f"CPU µs per trade over that span: {per_trade}"
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=30.0, help="trade frames/s (live-like: 30)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured period")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds ignored after start")
    ap.add_argument(
        "--trigger-ms",
        type=int,
        default=None,
        help="micro-batch interval of both hops "
        "(default: the project's, CRYPTOFLOW_TRIGGER_INTERVAL_MS)",
    )
    ap.add_argument(
        "--first-hop",
        choices=("bronze", "delta-sink"),
        default="bronze",
        help="Kafka -> Delta by the project's bronze job, or by Delta's own streaming sink",
    )
    ap.add_argument(
        "--drain",
        type=int,
        default=0,
        metavar="N",
        help="instead of a live-like rate: produce N trades first, report the drain's rate",
    )
    args = ap.parse_args()
    overrides = {} if args.trigger_ms is None else {"trigger_interval_ms": args.trigger_ms}
    with private_stack(**overrides) as s:
        dsn = admin_dsn(s)
        with db.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(TABLE)
        if args.drain:
            produce(s, args.drain)
        spark = get_spark(s, "bench-floor")
        sampler = StackSampler(lambda: {os.getpid(), *service_pids(s)})
        sampler.start()
        hops = _start_hops(spark, s, args.first_hop, dsn)
        try:
            if args.drain:
                result = _drain(dsn, hops, sampler, args.drain)
            else:
                result = _latency(s, dsn, hops, sampler, args)
        finally:
            sampler.stop()
            stop_between_batches(list(hops))
            spark.stop()
    result.update(first_hop=args.first_hop, trigger_ms=s.trigger_interval_ms)
    print(f"saved {save('floor', result)}")


if __name__ == "__main__":
    main()
