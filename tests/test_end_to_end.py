"""Issue 4's acceptance: the whole pipeline on simulated trades with faults, exact in Postgres.

The simulator drops connections, skips trade ids on the stream (so ingestion must backfill
them from REST) and sends malformed frames. Postgres ``raw_trades`` must hold exactly the
simulator's record, and ``metrics`` must equal an independent recomputation from it, column
by column, also after the Spark process is killed with SIGKILL at random moments, with exact
copies of records already in Kafka produced among the stream's: each copy is quarantined once
(PostgreSQL and Delta), bronze holds every Kafka record once, silver every trade once, and the
last restart stops cleanly on Ctrl-C. (This is the suite's one SIGKILL-and-restart run of the
whole query; it replaced the one in ``tests/test_restart.py``.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka import Producer
from delta.tables import DeltaTable

from cryptoflow.core.config import Settings
from cryptoflow.supervisor import child_env, cryptoflow_argv
from ingestion.simulator import SimulatorOptions, read_record, start_simulator_process
from tests.conftest import free_port, wait_until
from tests.ingest_helpers import Record, read_topic
from tests.metrics_oracle import compare_metrics, expected_metrics, latencies_from_rows
from tests.pipeline_helpers import expected, isolated, pg_rows, pg_trades

pytestmark = pytest.mark.integration

METRIC_COLUMNS = (
    "symbol, window_start, window_end, trade_count, total_volume, avg_price, min_price, "
    "max_price, price_stddev, vwap, buy_volume, sell_volume, buy_sell_ratio, trade_intensity, "
    "liquidity_proxy, avg_exchange_latency_ms, avg_source_latency_ms, avg_end_to_end_latency_ms"
)


def start(argv: list[str], s: Settings, log: Path, new_session: bool = False) -> subprocess.Popen:
    """``argv`` with ``s``'s settings; ``new_session``: in a session (and process group) of
    its own, whose id is its pid, so ``os.killpg`` takes it with its Spark JVM."""
    return subprocess.Popen(
        argv, env=child_env(s), cwd=log.parent, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )  # fmt: skip


def stop(proc: subprocess.Popen, timeout: float = 120) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def recorded(path: Path, symbols: list[str], per_symbol: int) -> list[dict] | None:
    """The record once the simulator generated every trade, else None."""
    if not path.exists():
        return None
    trades = read_record(path)
    counts = {sym: sum(t["s"] == sym for t in trades) for sym in symbols}
    return trades if all(n >= per_symbol for n in counts.values()) else None


def metrics_rows(s: Settings) -> list[dict]:
    names = [c.strip() for c in METRIC_COLUMNS.split(",")]
    rows = pg_rows(
        s, f"SELECT {METRIC_COLUMNS} FROM metrics WHERE symbol = ANY(%s)", (list(s.symbols),)
    )
    return [dict(zip(names, r, strict=True)) for r in rows]


def latencies(s: Settings) -> dict:
    rows = pg_rows(
        s,
        "SELECT symbol, trade_id, exchange_latency_ms, source_latency_ms, end_to_end_latency_ms "
        "FROM raw_trades WHERE symbol = ANY(%s)",
        (list(s.symbols),),
    )
    names = ("symbol", "trade_id", "exchange_latency_ms", "source_latency_ms",
             "end_to_end_latency_ms")  # fmt: skip
    return latencies_from_rows(dict(zip(names, r, strict=True)) for r in rows)


def assert_exact(s: Settings, record: list[dict], spark, proc_log: Path) -> None:
    """raw_trades equals the record; metrics equals the oracle; silver has no duplicates."""
    want = expected(record)

    def trades_landed():
        return len(pg_trades(s, s.symbols)) >= len(want)

    wait_until(trades_landed, 420, what=f"{len(want)} trades in raw_trades (log: {proc_log})")
    got = pg_trades(s, s.symbols)
    assert got.keys() == want.keys()
    sources = dict(
        ((r[0], r[1]), r[2])
        for r in pg_rows(
            s, "SELECT symbol, trade_id, source FROM raw_trades WHERE symbol = ANY(%s)",
            (list(s.symbols),),
        )
    )  # fmt: skip
    assert "backfill" in sources.values()  # the skipped ids came from REST
    for key, (price, qty, maker, trade_ms, event_ms) in want.items():
        if sources[key] == "backfill":  # REST trades carry no event time: E is set to T
            assert got[key] == (price, qty, maker, trade_ms, trade_ms), key
        else:
            assert got[key] == (price, qty, maker, trade_ms, event_ms), key

    def metrics_match():
        return not compare_metrics(
            expected_metrics(record, s.window_seconds, latencies(s)), metrics_rows(s)
        )

    try:
        wait_until(metrics_match, 240, what="metrics equal to the recomputation")
    except pytest.fail.Exception:
        problems = compare_metrics(
            expected_metrics(record, s.window_seconds, latencies(s)), metrics_rows(s)
        )
        pytest.fail(f"{len(problems)} metric differences, first: {problems[:5]}")
    # A batch serves PostgreSQL before it appends to Delta silver, so silver may still be
    # committing the last trades: wait for a version holding them all, then count that one
    # version (no other commit can slip in between the two counts).
    path = s.table_path("silver")

    def silver_complete():
        version = DeltaTable.forPath(spark, path).history(1).first().version
        df = spark.read.format("delta").option("versionAsOf", version).load(path)
        return (df,) if df.count() >= len(want) else None

    (silver,) = wait_until(silver_complete, 240, 1.0, f"{len(want)} trades in Delta silver")
    assert silver.count() == silver.select("symbol", "trade_id").distinct().count() == len(want)


def test_up_with_faulty_simulator_is_exact(settings, spark, unique, tmp_path):
    s = isolated(settings, unique, tmp_path).replace(source="sim", sim_port=free_port())
    record = tmp_path / "record.jsonl"
    log = tmp_path / "up.log"
    up = start(
        cryptoflow_argv(
            "up", "--source", "sim", "--sim-seed", "5", "--sim-rate", "150",
            "--sim-max-trades", "300", "--sim-record", str(record), "--sim-drop-every", "4",
            "--sim-skip-ids", "3", "--sim-skip-every", "70", "--sim-malformed-every", "90",
            "--sim-wait-for-client", "--status-every", "5",
        ),
        s,
        log,
    )  # fmt: skip
    try:
        trades = wait_until(lambda: recorded(record, s.symbols, 300), 300, what="the simulation")
        assert_exact(s, trades, spark, log)
        quarantined = pg_rows(
            s, "SELECT count(*) FROM quarantine WHERE topic = %s", (s.kafka_topic,)
        )[0][0]
        assert quarantined > 0  # the malformed frames, each with the expectation it failed
        # a status line per part, the query's once a batch has served (every 5 s)
        parts = ("trades: running batch=", "ingest: running frames/s=")
        wait_until(lambda: all(p in log.read_text() for p in parts), 60, 0.5,
                   "a running status line of the query and of ingestion")  # fmt: skip
    finally:
        code = stop(up)
    assert code == 0, log.read_text()[-3000:]
    assert "up: stopped" in log.read_text()


def test_spark_killed_three_times_stays_exact(settings, spark, unique, tmp_path):
    """The Spark process SIGKILLed three times at random points of progress (alternately
    ``up --no-ingest`` and ``run``, the same query and checkpoint) while ingestion feeds it,
    with exact copies of records already in Kafka produced among the stream's: raw_trades,
    metrics and silver stay exact, each copy is quarantined once in PostgreSQL and in Delta
    despite the replays, bronze holds every Kafka record once, and the last restart stops
    on Ctrl-C with exit code 0."""
    # Batches of at most 100 records: the stream takes several, so every kill lands in it.
    s = isolated(settings, unique, tmp_path).replace(
        source="sim", sim_port=free_port(), max_offsets_per_trigger=100
    )
    killed_pipeline_stays_exact(s, spark, tmp_path, kills=3, rng=random.Random(unique))


def produce_copies(s: Settings, records: list[Record]) -> list[tuple[int, int]]:
    """Exact copies of ``records`` (key, value, headers, timestamp) appended to their own
    partitions of the trade topic, as a producer retry without idempotence would write them;
    the (partition, offset) of each copy."""
    positions: list[tuple[int, int]] = []
    errors: list[object] = []

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(err)
        else:
            positions.append((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": s.bootstrap_servers, "log_level": 3})
    for r in records:
        producer.produce(s.kafka_topic, value=r.value, key=r.key, partition=r.partition,
                         timestamp=r.timestamp_ms, headers=list(r.headers.items()),
                         on_delivery=delivered)  # fmt: skip
    assert producer.flush(30) == 0
    assert not errors and len(positions) == len(records), errors
    return positions


def repeats(records: list[Record]) -> set[tuple[int, int]]:
    """(partition, offset) of every record the query must quarantine: a frame ingestion marked
    invalid, or a trade whose (symbol, id) an earlier record holds (a symbol's records share
    one partition, so "earlier" is its offset order)."""
    seen: set[tuple[str, int]] = set()
    out = set()
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        t = r.trade()
        key = None if t is None else (t["s"], t["t"])
        if key is None or key in seen:
            out.add((r.partition, r.offset))
        else:
            seen.add(key)
    return out


def copy_while_ingesting(
    s: Settings, total: int, rng: random.Random, per_point: int, stopped: threading.Event
) -> list[tuple[int, int]]:
    """Once the trade topic holds 1/4, 2/4 and 3/4 of ``total`` trades, exact copies of
    ``per_point`` random trade records in it so far (so the copies lie among the stream's
    records, in batches that get killed and replayed); their (partition, offset)."""
    copies: list[tuple[int, int]] = []
    for quarter in (1, 2, 3):

        def enough(n: int = total * quarter // 4) -> list[Record] | None:
            if stopped.is_set():
                raise RuntimeError("stopped")
            valid = [r for r in read_topic(s, s.kafka_topic) if r.trade() is not None]
            return valid if len(valid) >= n else None

        valid = wait_until(enough, 300, 0.2, f"{quarter}/4 of the trades in Kafka")
        copies += produce_copies(s, rng.sample(valid, per_point))
    return copies


def pg_quarantined(s: Settings) -> set[tuple[int, int]]:
    rows = pg_rows(
        s, "SELECT kafka_partition, kafka_offset FROM quarantine WHERE topic = %s",
        (s.kafka_topic,),
    )  # fmt: skip
    return {(p, o) for p, o in rows}


def killed_pipeline_stays_exact(
    s: Settings,
    spark,
    tmp_path: Path,
    kills: int,
    rng: random.Random,
    per_symbol: int = 400,
    copies: int = 7,
    while_running: Callable[[], None] | None = None,
) -> None:
    """The simulator with faults, ingestion, and the Spark process (``up --no-ingest`` and
    ``run`` in turn) SIGKILLed ``kills`` times at random points of progress, each after it
    served a batch, and restarted; meanwhile, at each quarter of the stream, ``copies`` exact
    copies of records already in Kafka are produced. The first kill takes the driver only (its
    JVM exits once the driver's pipe closes), the others its whole process group (driver and
    JVM, no shutdown hook anywhere). Then raw_trades, metrics and silver are exact; every
    record of the topic that repeats an earlier one (the copies, and any repeat ingestion
    wrote itself) is quarantined, once, in PostgreSQL and in Delta, and nothing else is;
    bronze holds every Kafka record once; the last process stops on SIGINT with exit code 0.
    ``while_running`` is called once the trades are exact, the last pipeline still running."""
    record = tmp_path / "record.jsonl"
    sim = start_simulator_process(
        s,
        SimulatorOptions(seed=9, rate=40, max_trades=per_symbol, record=record, drop_every=6.0,
                         skip_ids=2, skip_every=90, wait_for_client=True),
    )  # fmt: skip
    ingest_log, spark_log = tmp_path / "ingest.log", tmp_path / "spark.log"
    ingest = start(cryptoflow_argv("ingest", "--source", "sim"), s, ingest_log)
    commands = (cryptoflow_argv("up", "--no-ingest", "--source", "sim", "--status-every", "5"),
                cryptoflow_argv("run"))  # fmt: skip
    jobs = start(commands[0], s, spark_log, new_session=True)
    total = per_symbol * len(s.symbols)
    stopped = threading.Event()
    copier = ThreadPoolExecutor(1, thread_name_prefix="copies")
    copied = copier.submit(
        copy_while_ingesting, s, total, random.Random(rng.random()), copies, stopped
    )

    def tail() -> str:
        return spark_log.read_text(errors="replace")[-3000:]

    def served() -> int:
        return len(pg_trades(s, s.symbols))

    try:
        # Kills at random points of progress (fractions of the trades in raw_trades between
        # 0.05 and 0.8, one in each of ``kills`` equal spans), each once the killed process
        # served a batch of its own (unless every trade is served already): a kill hits a
        # running stream, not a process still starting.
        step = 0.75 / kills
        for kill in range(1, kills + 1):
            target = int(total * rng.uniform(0.05 + (kill - 1) * step, 0.05 + kill * step))
            floor = served()
            wait_until(
                lambda t=target, f=floor, p=jobs: (
                    p.poll() is not None or ((n := served()) >= t and (n > f or n >= total))
                ),
                300,
                what=f"{target} trades and a batch served before kill {kill} (log: {spark_log})",
            )
            assert jobs.poll() is None, tail()
            time.sleep(rng.uniform(0, 1.5))  # a random moment inside a batch
            if kill == 1:
                jobs.kill()  # SIGKILL to the driver alone
            else:
                os.killpg(jobs.pid, signal.SIGKILL)  # the driver and its JVM, as a machine dies
            jobs.wait(30)
            jobs = start(commands[kill % 2], s, spark_log, new_session=True)
        trades = wait_until(lambda: recorded(record, s.symbols, per_symbol), 300,
                            what="the simulation")  # fmt: skip
        assert_exact(s, trades, spark, spark_log)
        if while_running is not None:
            while_running()
        stop(ingest)  # every trade is served: what ingestion wrote is in Kafka
        records = read_topic(s, s.kafka_topic)
        quarantine_want = repeats(records)
        assert set(copied.result()) <= quarantine_want
        bronze_path = s.table_path("bronze")
        wait_until(
            lambda: (
                jobs.poll() is not None
                or (
                    len(pg_quarantined(s)) >= len(quarantine_want)
                    and spark.read.format("delta").load(bronze_path).count() >= len(records)
                )
            ),
            300,
            1.0,
            f"{len(quarantine_want)} quarantined and {len(records)} records in bronze",
        )
        assert jobs.poll() is None, tail()
        assert stop(jobs) == 0, tail()  # Ctrl-C: a clean stop
    finally:
        stopped.set()
        copier.shutdown()
        if jobs.poll() is None:
            os.killpg(jobs.pid, signal.SIGKILL)
            jobs.wait(30)
        stop(ingest)
        sim.stop()
    assert pg_quarantined(s) == quarantine_want
    quarantine = spark.read.format("delta").load(s.table_path("quarantine"))
    positions = [(r.kafka_partition, r.kafka_offset) for r in
                 quarantine.select("kafka_partition", "kafka_offset").collect()]  # fmt: skip
    assert sorted(positions) == sorted(quarantine_want)  # each once, despite the replays
    bronze = spark.read.format("delta").load(bronze_path).select("partition", "offset")
    assert bronze.count() == bronze.distinct().count() == len(records)
    silver = spark.read.format("delta").load(s.table_path("silver"))
    keys = [(r.symbol, r.trade_id) for r in silver.select("symbol", "trade_id").collect()]
    assert len(keys) == len(set(keys)) and set(keys) == set(expected(trades))
