"""Benchmark: the latency floor of the pipeline's two designs on this machine.

The serving path with as little as possible in it: no validation, no deduplication, no
commit ledger on the PostgreSQL side, no metrics, no gold. In this process, on a private
stack, the last hop is always the same ``foreachBatch``: trade id and trade time read from
the JSON (``get_json_object``), collected through Arrow, COPY into a PostgreSQL table, one
commit a batch. Before it:

* the old chain (the default): two queries in series, Kafka -> Delta, then that Delta table
  as a stream -> the ``foreachBatch``. Hop 1 is a bronze-only query as the old bronze job
  was (``--first-hop bronze``: Kafka -> ``to_bronze`` -> ``foreachBatch`` appending to Delta
  bronze with the commit ledger, log checkpoints in the background), or Delta's own
  streaming sink (``--first-hop delta-sink``);
* the new shape (``--one-hop``): one query, Kafka -> the ``foreachBatch``, no Delta at all;
  with ``--with-bronze`` the same ``foreachBatch`` then appends the batch's records to Delta
  bronze (as hop 1 above does), the one Delta write the design cannot leave out.

A producer thread writes ``--rate`` Binance-shaped trade frames a second, ``T`` = now; the
measured period begins ``--warmup`` seconds after the first row reaches PostgreSQL. The
figures are p50 / p99 of (PostgreSQL commit time - trade_time), as in ``bench_latency.py``,
the median and longest micro-batch of each query, and the CPU of the stack (Spark's in %
of one core). Whatever the project's own pipeline adds to them is the cost of its
features; what is left here is the cost of the design's micro-batches and commits in series
on these cores.

With ``--drain N`` it produces N trades first (as ``bench_drain.py``) and reports the rate
and CPU per trade between the first and the last PostgreSQL commit instead.

    .venv/bin/python bench/bench_floor.py --rate 30 --seconds 60 --warmup 20
    .venv/bin/python bench/bench_floor.py --first-hop delta-sink --rate 30 --seconds 60
    .venv/bin/python bench/bench_floor.py --one-hop --rate 30 --seconds 60 --warmup 20
    .venv/bin/python bench/bench_floor.py --one-hop --with-bronze --rate 30 --seconds 60
    .venv/bin/python bench/bench_floor.py --one-hop --with-bronze --silver-tables 3 --rate 72
    .venv/bin/python bench/bench_floor.py --drain 1000000
    .venv/bin/python bench/bench_floor.py --one-hop --drain 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from stack import (
    StackSampler,
    commit_span_sql,
    cpu_per_trade,
    cpu_report,
    percentile,
    private_stack,
    produce,
    produce_live,
    save,
    service_pids,
)

from cryptoflow.core import db
from cryptoflow.core.services.postgres import admin_dsn
from cryptoflow.core.spark import get_spark
from pipelines.batch_values import opaque_timestamp
from pipelines.bronze.source import ensure_bronze_table, kafka_options
from pipelines.bronze.transform import BRONZE_SCHEMA, to_bronze
from pipelines.ledger import CommitLedger, query_id_reader
from pipelines.log_checkpoints import checkpoint_in_background
from pipelines.progress import stop_between_batches

TABLE = "CREATE TABLE IF NOT EXISTS floor_trades (trade_id bigint, trade_ms bigint)"
LATENCY = """
SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000 - trade_ms
FROM floor_trades WHERE pg_xact_commit_timestamp(xmin) >= %s"""


class CopyToPostgres:
    """The last hop's ``foreachBatch``: trade id and time of each frame (``value``, Kafka's
    or bronze's) into ``floor_trades``."""

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


class BronzeAppend:
    """Hop 1's ``foreachBatch`` with ``--first-hop bronze``, as the old bronze job's: the
    batch's ``to_bronze`` rows stamped with the time of the write, appended once to Delta
    bronze (the commit names the query and batch, ``pipelines.ledger``)."""

    def __init__(self, path: str, ledger: CommitLedger) -> None:
        self.path, self.ledger = path, ledger

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        # Not current_timestamp(): a literal per batch kept out of the generated code, as
        # the project does (pipelines.batch_values), so batches reuse the compiled classes.
        at = opaque_timestamp(F.lit(datetime.now(UTC)).cast("timestamp"), F.col("topic"))
        rows = records.select(
            *(at.alias(f.name) if f.name == "bronze_time" else F.col(f.name) for f in BRONZE_SCHEMA)
        )
        self.ledger.append(rows, self.path, batch_id)


class CopyThenBronze:
    """The ``foreachBatch`` of ``--one-hop --with-bronze``: the batch read once (cached),
    COPY into PostgreSQL, then the records appended to Delta bronze. With ``silver`` tables
    (``--silver-tables N``) the records are also appended to each, as the pipeline appends
    a batch to one silver table per stream kind: the first in this thread, bronze and the
    others in threads beside it."""

    def __init__(
        self, copy: CopyToPostgres, bronze: BronzeAppend, silver: list[BronzeAppend]
    ) -> None:
        self.copy, self.bronze, self.silver = copy, bronze, silver
        self.pool = ThreadPoolExecutor(max(1, len(silver)), thread_name_prefix="floor-write")

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        records = records.persist()
        try:
            self.copy(records, batch_id)
            if not self.silver:
                self.bronze(records, batch_id)
                return
            beside = [self.pool.submit(self.bronze, records, batch_id)]
            beside += [self.pool.submit(t, records, batch_id) for t in self.silver[1:]]
            self.silver[0](records, batch_id)
            for f in beside:
                f.result()
        finally:
            records.unpersist()


def _kafka(spark, s) -> DataFrame:
    return spark.readStream.format("kafka").options(**kafka_options(s)).load()


def _bronze(spark, s, checkpoint: Path, trigger: int) -> tuple[str, StreamingQuery]:
    """Kafka -> ``to_bronze`` -> ``BronzeAppend`` into this stack's bronze table; returns
    (table path, query)."""
    path = s.table_path("bronze")
    ensure_bronze_table(spark, path)
    checkpoint_in_background(spark, s, path)
    ledger = CommitLedger(query_id_reader(str(checkpoint)))
    query = (
        to_bronze(_kafka(spark, s))
        .writeStream.queryName("bronze")
        .foreachBatch(BronzeAppend(path, ledger))
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime=f"{trigger} milliseconds")
        .start()
    )
    return path, query


def _delta_sink(spark, s, checkpoint: Path, trigger: int) -> tuple[str, StreamingQuery]:
    """Kafka -> Delta through Delta's own streaming sink; returns (table path, query)."""
    path = str(Path(s.data_dir) / "floor-bronze")
    # The sink creates the table: give it the inline interval the streaming tables had
    # before their checkpoints moved to a thread (Delta's default, 10, would be far worse).
    spark.conf.set("spark.databricks.delta.properties.defaults.checkpointInterval", "100")
    query = (
        _kafka(spark, s)
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


def _start_hops(spark, s, shape: str, dsn: str, silver_tables: int = 0) -> list[StreamingQuery]:
    """The queries of ``shape`` (``one-hop``, ``bronze`` or ``delta-sink``), started."""
    chk = Path(s.data_dir) / "floor-checkpoints"
    trigger = f"{s.trigger_interval_ms} milliseconds"
    if shape == "one-hop-bronze":
        path = s.table_path("bronze")
        ensure_bronze_table(spark, path)
        checkpoint_in_background(spark, s, path)
        app = query_id_reader(str(chk / "one-hop"))
        silver = []
        for i in range(silver_tables):
            table = str(Path(s.data_dir) / f"floor-silver-{i}")
            ensure_bronze_table(spark, table)
            silver.append(BronzeAppend(table, CommitLedger(app)))
        handler = CopyThenBronze(CopyToPostgres(dsn), BronzeAppend(path, CommitLedger(app)), silver)
        one = (
            to_bronze(_kafka(spark, s))
            .writeStream.queryName("one-hop")
            .foreachBatch(handler)
            .option("checkpointLocation", str(chk / "one-hop"))
            .trigger(processingTime=trigger)
            .start()
        )
        return [one]
    if shape == "one-hop":
        one = (
            _kafka(spark, s)
            .writeStream.queryName("one-hop")
            .foreachBatch(CopyToPostgres(dsn))
            .option("checkpointLocation", str(chk / "one-hop"))
            .trigger(processingTime=trigger)
            .start()
        )
        return [one]
    hop = _bronze if shape == "bronze" else _delta_sink
    path, hop1 = hop(spark, s, chk / "hop1", s.trigger_interval_ms)
    hop2 = (
        spark.readStream.format("delta")
        .load(path)
        .writeStream.queryName("hop2")
        .foreachBatch(CopyToPostgres(dsn))
        .option("checkpointLocation", str(chk / "hop2"))
        .trigger(processingTime=trigger)
        .start()
    )
    return [hop1, hop2]


_SHAPES = {
    "one-hop": "Kafka -> PostgreSQL, one query",
    "one-hop-bronze": "Kafka -> PostgreSQL, then Delta bronze, one query",
    "bronze": "Kafka -> bronze query -> Delta stream -> PostgreSQL",
    "delta-sink": "Kafka -> Delta sink -> Delta stream -> PostgreSQL",
}


def _count(dsn: str) -> int:
    with contextlib.closing(db.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM floor_trades")
        return cur.fetchone()[0]


def _check(hops: list[StreamingQuery]) -> None:
    for q in hops:
        if not q.isActive:
            raise SystemExit(f"bench: {q.name} stopped: {q.exception()}")


def _latency(s, dsn: str, hops, sampler: StackSampler, args, shape: str) -> dict:
    """Live-like run: ``args.rate`` frames a second, latency over ``args.seconds``."""
    stop = threading.Event()
    producer = threading.Thread(target=produce_live, args=(s, args.rate, stop), daemon=True)
    producer.start()
    try:
        # Warm-up: until the first row reaches PostgreSQL, then --warmup more seconds.
        while not _count(dsn):
            _check(hops)
            time.sleep(1)
        time.sleep(args.warmup)
        with db.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT now()")
            since = cur.fetchone()[0]
        measured_from = time.time()
        time.sleep(args.seconds)
        _check(hops)
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
    spark_share = cpu.get("spark", 0.0) / args.seconds
    result = {"rate": args.rate, "rows": len(lat), "p50_ms": percentile(lat, 0.5),
              "p99_ms": percentile(lat, 0.99), "batch_ms": batch_ms,
              "spark_cpu_share_of_one_core": spark_share, "cpu_seconds": cpu,
              "peak_rss_mb": sampler.peak_kb / 1024}  # fmt: skip
    print(
        f"floor ({_SHAPES[shape]}, trigger {s.trigger_interval_ms} ms): "
        f"p50={result['p50_ms']:.0f} ms p99={result['p99_ms']:.0f} ms over {len(lat)} rows\n"
        f"batches with rows: {batches}\n"
        f"Spark {spark_share:.0%} of one core; CPU over the measured period: "
        f"{cpu_report(cpu, args.seconds)}; peak memory {result['peak_rss_mb']:.0f} MB"
    )
    return result


def _drain(dsn: str, hops, sampler: StackSampler, trades: int, shape: str) -> dict:
    """Drain run: wait until ``floor_trades`` holds the ``trades`` produced beforehand."""
    started = time.monotonic()
    while _count(dsn) < trades:
        _check(hops)
        time.sleep(2)
    with db.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(commit_span_sql("floor_trades"))
        first, last, after, _ = cur.fetchone()
    total = time.monotonic() - started
    span, after = float(last - first), int(after or 0)
    cpu = sampler.cpu_between(float(first), float(last))
    cpu_us, per_trade = cpu_per_trade(cpu, after)
    result = {"trades": trades, "seconds_total": total, "seconds_first_to_last_commit": span,
              "trades_per_s_steady": after / span if span else None,
              "cpu_us_per_trade_steady": cpu_us}  # fmt: skip
    print(
        f"floor ({_SHAPES[shape]}) drained {trades} trades in {total:.0f}s with Spark "
        f"start-up; "
        f"{result['trades_per_s_steady'] or 0:.0f} trades/s between the first and the last "
        f"commit ({after} trades in {span:.1f}s)\n"
        f"CPU µs per trade over that span: {per_trade}"
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=30.0, help="trade frames/s (live-like: 30)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured period")
    ap.add_argument(
        "--warmup", type=float, default=20.0,
        help="seconds ignored after the first row reaches PostgreSQL",
    )  # fmt: skip
    ap.add_argument(
        "--trigger-ms",
        type=int,
        default=None,
        help="micro-batch interval of every query "
        "(default: the project's, CRYPTOFLOW_TRIGGER_INTERVAL_MS)",
    )
    ap.add_argument(
        "--first-hop",
        choices=("bronze", "delta-sink"),
        default=None,
        help="the old chain's Kafka -> Delta: a bronze query as the old bronze job "
        "(default), or Delta's own streaming sink",
    )
    ap.add_argument(
        "--one-hop",
        action="store_true",
        help="the new shape: one query, Kafka -> PostgreSQL, no Delta",
    )
    ap.add_argument(
        "--with-bronze",
        action="store_true",
        help="with --one-hop: each batch also appends its records to Delta bronze",
    )
    ap.add_argument(
        "--silver-tables",
        type=int,
        default=0,
        metavar="N",
        help="with --with-bronze: each batch also appends its records to N more Delta tables "
        "(one silver table per stream kind with records; the default streams: 3)",
    )
    ap.add_argument(
        "--drain",
        type=int,
        default=0,
        metavar="N",
        help="instead of a live-like rate: produce N trades first, report the drain's rate",
    )
    args = ap.parse_args()
    if args.one_hop and args.first_hop:
        ap.error("--one-hop has no first hop: give one of --one-hop and --first-hop")
    if args.with_bronze and not args.one_hop:
        ap.error("--with-bronze goes with --one-hop")
    shape = "one-hop" if args.one_hop else args.first_hop or "bronze"
    if args.with_bronze:
        shape = "one-hop-bronze"
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
        hops = _start_hops(spark, s, shape, dsn, args.silver_tables)
        try:
            if args.drain:
                result = _drain(dsn, hops, sampler, args.drain, shape)
            else:
                result = _latency(s, dsn, hops, sampler, args, shape)
        finally:
            sampler.stop()
            stop_between_batches(hops)
            spark.stop()
    result.update(shape=shape, trigger_ms=s.trigger_interval_ms, silver_tables=args.silver_tables)
    print(f"saved {save('floor', result)}")


if __name__ == "__main__":
    main()
