"""The naive pipeline, as a user comparing tools would write it: the original project's one
Spark Structured Streaming query, Kafka -> ``from_json`` of the Binance combined-stream trade
frame -> ``foreachBatch`` JDBC append (Spark's own ``df.write.format("jdbc")``) into one
PostgreSQL table of the 12 original raw_trades columns. No Delta, no validation, no
deduplication: at-least-once (a replayed batch appends its rows again).

``drain_naive`` runs it in a child process (its own Spark JVM, sampled by ``StackSampler``)
over trades already in the topic and measures it the way bench_drain.py measures the
project: wall time including Spark start-up, and trades/s between the first and the last
PostgreSQL commit into the table. The CLI brings up a private stack and produces the trades
with ``stack.produce`` (as bench_drain.py, which runs it beside the project's pipeline):

    .venv/bin/python bench/naive_pipeline.py --trades 1000000
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from stack import (
    StackSampler,
    commit_span_sql,
    drain_figures,
    drain_report,
    private_stack,
    produce,
    save,
    service_pids,
)

from cryptoflow.core.config import Settings, load_settings
from cryptoflow.core.db import connect
from cryptoflow.core.jars import KAFKA_JARS, SPARK_JARS, JarSet, ensure_jars, jar_paths
from cryptoflow.core.services.postgres import admin_dsn

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: The PostgreSQL JDBC driver, for this benchmark only (the project writes with psycopg2).
NAIVE_JARS = JarSet("naive-jdbc", ("org.postgresql:postgresql:42.7.14",), transitive=False)

#: The Binance combined-stream trade frame. Its field names differ only by case (e/E, t/T,
#: m/M): the parse needs spark.sql.caseSensitive=true.
FRAME_SCHEMA = (
    "stream STRING, data STRUCT<e: STRING, E: BIGINT, s: STRING, t: BIGINT, p: STRING, "
    "q: STRING, T: BIGINT, m: BOOLEAN, M: BOOLEAN>"
)

_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    symbol                 text,
    trade_id               bigint,
    price                  numeric(18, 8),
    quantity               numeric(18, 8),
    is_buyer_maker         boolean,
    event_time             timestamptz,
    trade_time             timestamptz,
    ingestion_time         timestamptz,
    spark_time             timestamptz,
    exchange_latency_ms    bigint,
    source_latency_ms      bigint,
    end_to_end_latency_ms  bigint
)"""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _check_table(table: str) -> str:
    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(f"table {table!r}: expected a lower-case SQL identifier")
    return table


def create_table(s: Settings, table: str) -> None:
    """The target table: the 12 original columns, no key, no constraints."""
    conn = connect(admin_dsn(s))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_TABLE_DDL.format(table=_check_table(table)))
    finally:
        conn.close()


def jdbc_target(dsn: str) -> tuple[str, dict[str, str]]:
    """A libpq DSN (URL or key=value) -> the JDBC URL and the user/password properties."""
    from psycopg2.extensions import parse_dsn

    p = parse_dsn(dsn)
    url = f"jdbc:postgresql://{p.get('host', 'localhost')}:{p.get('port', 5432)}/{p['dbname']}"
    props = {"user": p["user"], "driver": "org.postgresql.Driver"}
    if "password" in p:
        props["password"] = p["password"]
    return url, props


def naive_spark(s: Settings, app_name: str) -> SparkSession:
    """A session with exactly get_spark's settings, plus the JDBC driver in ``spark.jars``
    (get_spark's own ``spark.jars`` and driver class path cannot take another JAR)."""
    from pyspark.sql import SparkSession

    from cryptoflow.core.services.process import java_binary
    from cryptoflow.core.spark import spark_conf

    java = java_binary()  # the environment get_spark sets up
    os.environ.setdefault("JAVA_HOME", os.path.dirname(os.path.dirname(os.path.realpath(java))))
    if s.spark_master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = spark_conf(s, app_name)
    conf["spark.jars"] = ",".join(
        [conf["spark.jars"], *map(str, jar_paths(s.jar_cache, NAIVE_JARS))]
    )
    conf["spark.sql.caseSensitive"] = "true"  # already get_spark's; the parse needs it
    spark = SparkSession.builder.config(map=conf).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def run_query(s: Settings, table: str, checkpoint: Path, max_offsets: int) -> None:
    """The child: the naive streaming query, until SIGTERM / SIGINT or its failure."""
    from pyspark.sql import functions as F

    spark = naive_spark(s, f"naive-{table}")
    url, props = jdbc_target(admin_dsn(s))

    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", s.bootstrap_servers)
        .option("subscribe", s.kafka_topic)
        .option("startingOffsets", "earliest")
    )
    if max_offsets > 0:
        reader = reader.option("maxOffsetsPerTrigger", max_offsets)
    kafka = reader.load()
    frame = F.from_json(F.col("value").cast("string"), FRAME_SCHEMA)
    d = kafka.select(frame.alias("f"), F.col("timestamp").alias("ingestion_time")).select(
        "f.data.*", "ingestion_time", F.current_timestamp().alias("spark_time")
    )
    ingested_ms, spark_ms = F.unix_millis(F.col("ingestion_time")), F.unix_millis("spark_time")
    trades = d.select(
        F.col("s").alias("symbol"),
        F.col("t").alias("trade_id"),
        F.col("p").cast("decimal(18,8)").alias("price"),
        F.col("q").cast("decimal(18,8)").alias("quantity"),
        F.col("m").alias("is_buyer_maker"),
        F.timestamp_millis(F.col("E")).alias("event_time"),
        F.timestamp_millis(F.col("T")).alias("trade_time"),
        "ingestion_time",
        "spark_time",
        (ingested_ms - F.col("E")).alias("exchange_latency_ms"),
        (ingested_ms - F.col("T")).alias("source_latency_ms"),
        (spark_ms - F.col("T")).alias("end_to_end_latency_ms"),
    )

    def write(batch: DataFrame, batch_id: int) -> None:
        writer = batch.write.format("jdbc").options(url=url, dbtable=table, **props)
        writer.mode("append").save()

    query = (
        trades.writeStream.foreachBatch(write)
        .option("checkpointLocation", str(checkpoint))
        .queryName(f"naive-{table}")
        .start()
    )
    print(f"naive: query started into {table}", flush=True)
    halt = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: halt.set())
    while query.isActive and not halt.is_set():
        query.awaitTermination(0.5)
    error = query.exception()
    query.stop()
    spark.stop()
    if error is not None:
        raise SystemExit(f"naive: the query failed: {error}")
    print("naive: stopped", flush=True)


def _count(conn, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return cur.fetchone()[0]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def drain_naive(
    settings: Settings,
    trades: int,
    table: str = "naive_trades",
    *,
    max_offsets_per_trigger: int | None = None,
    timeout: float = 3600.0,
    poll: float = 2.0,
) -> dict:
    """Drain the ``trades`` frames already in ``settings.kafka_topic`` (services up) through
    the naive pipeline into ``table`` (created if missing), then stop it.

    ``max_offsets_per_trigger`` caps a micro-batch (default: the project's bronze cap,
    ``settings.max_offsets_per_trigger``, so both see the same batches; 0: Spark's default,
    the whole backlog in one batch). Returns the figures of bench_drain.py (wall seconds
    from the child's start, Spark start-up included; trades/s between the first and the last
    commit into ``table``; the CPU per trade over that span per process group; peak memory
    of the stack and of the pipeline's process tree alone) plus ``rows`` in the table after
    the stop. Raises ``RuntimeError`` when the child fails or ``timeout`` passes.
    """
    s = settings
    table = _check_table(table)
    cap = s.max_offsets_per_trigger if max_offsets_per_trigger is None else max_offsets_per_trigger
    for js in (SPARK_JARS, NAIVE_JARS):
        ensure_jars(s.jar_cache, js, s.maven_repo)
    create_table(s, table)
    checkpoint = s.data_dir.resolve() / "naive-checkpoints" / table
    shutil.rmtree(checkpoint, ignore_errors=True)
    log = s.data_dir.resolve() / f"naive-{table}.log"
    argv = [sys.executable, str(Path(__file__).resolve()), "--run", "--table", table,
            "--checkpoint", str(checkpoint), "--max-offsets-per-trigger", str(cap)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOFLOW_")}
    env.update(s.to_env())
    conn = connect(admin_dsn(s))
    conn.autocommit = True
    started = time.monotonic()
    started_epoch = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    whole = StackSampler(lambda: service_pids(s) | {proc.pid})  # as bench_drain.py samples
    pipeline = StackSampler(lambda: {proc.pid})
    whole.start()
    pipeline.start()
    try:
        while (landed := _count(conn, table)) < trades:
            if proc.poll() is not None:
                raise RuntimeError(f"naive pipeline exited ({proc.returncode}) at {landed} rows")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"naive pipeline timed out at {landed} of {trades} rows")
            time.sleep(poll)
        total = time.monotonic() - started
    except RuntimeError as e:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{e}; see {log}:\n{tail}") from None
    finally:
        _stop(proc)
        whole.stop()
        pipeline.stop()
    rows = _count(conn, table)
    with conn.cursor() as cur:
        cur.execute(commit_span_sql(table))
        span_row = cur.fetchone()
    conn.close()
    figures = drain_figures("naive", trades, started_epoch, total, span_row, whole, pipeline, log)
    figures.update(rows=rows, table=table, max_offsets_per_trigger=cap)
    return figures


def report(r: dict) -> str:
    """The figures in bench_drain.py's words."""
    return "\n".join(drain_report(f"naive pipeline ({r['rows']} rows)", r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--table", default="naive_trades")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument(
        "--max-offsets-per-trigger", type=int, default=None,
        help="records per micro-batch (default: the project's bronze cap; 0: no cap)",
    )  # fmt: skip
    ap.add_argument("--run", action="store_true", help=argparse.SUPPRESS)  # the child
    ap.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        run_query(load_settings(dotenv=None), args.table, args.checkpoint,
                  args.max_offsets_per_trigger or 0)  # fmt: skip
        return

    base = load_settings(environ={}, dotenv=None)
    for js in (SPARK_JARS, KAFKA_JARS, NAIVE_JARS):
        ensure_jars(base.jar_cache, js, base.maven_repo)
    with private_stack() as s:
        t = time.monotonic()
        produce(s, args.trades)
        print(f"bench: produced {args.trades} trades in {time.monotonic() - t:.1f}s", flush=True)
        result = drain_naive(s, args.trades, args.table, timeout=args.timeout,
                             max_offsets_per_trigger=args.max_offsets_per_trigger)  # fmt: skip
    print(report(result))
    print(f"saved {save('naive', result)}")


if __name__ == "__main__":
    main()
