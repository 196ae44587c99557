"""Issue 4's acceptance: the whole pipeline on simulated trades with faults, exact in Postgres.

The simulator drops connections, skips trade ids on the stream (so ingestion must backfill
them from REST) and sends malformed frames. Postgres ``raw_trades`` must hold exactly the
simulator's record, and ``metrics`` must equal an independent recomputation from it, column
by column, also after the Spark process is killed with SIGKILL at random moments.
"""

from __future__ import annotations

import random
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from delta.tables import DeltaTable

from cryptoflow.core.config import Settings
from cryptoflow.supervisor import child_env, cryptoflow_argv
from ingestion.simulator import SimulatorOptions, read_record, start_simulator_process
from tests.conftest import free_port, wait_until
from tests.metrics_oracle import compare_metrics, expected_metrics, latencies_from_rows
from tests.pipeline_helpers import expected, isolated, pg_rows, pg_trades

pytestmark = pytest.mark.integration

METRIC_COLUMNS = (
    "symbol, window_start, window_end, trade_count, total_volume, avg_price, min_price, "
    "max_price, price_stddev, vwap, buy_volume, sell_volume, buy_sell_ratio, trade_intensity, "
    "liquidity_proxy, avg_exchange_latency_ms, avg_source_latency_ms, avg_end_to_end_latency_ms"
)


def start(argv: list[str], s: Settings, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        argv, env=child_env(s), cwd=log.parent, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


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
    s = isolated(settings, unique, tmp_path).replace(source="sim", sim_port=free_port())
    killed_pipeline_stays_exact(s, spark, tmp_path, kills=3, rng=random.Random(unique))


def killed_pipeline_stays_exact(
    s: Settings,
    spark,
    tmp_path: Path,
    kills: int,
    rng: random.Random,
    per_symbol: int = 400,
    while_running: Callable[[], None] | None = None,
) -> None:
    """The simulator with faults, ingestion, and ``up --no-ingest`` SIGKILLed ``kills`` times
    at random points of progress and restarted; then raw_trades, metrics and silver are exact.
    ``while_running`` is called after that, the last pipeline still running."""
    record = tmp_path / "record.jsonl"
    sim = start_simulator_process(
        s,
        SimulatorOptions(seed=9, rate=40, max_trades=per_symbol, record=record, drop_every=6.0,
                         skip_ids=2, skip_every=90, wait_for_client=True),
    )  # fmt: skip
    ingest_log, spark_log = tmp_path / "ingest.log", tmp_path / "spark.log"
    ingest = start(cryptoflow_argv("ingest", "--source", "sim"), s, ingest_log)
    spark_argv = cryptoflow_argv("up", "--no-ingest", "--source", "sim", "--status-every", "5")
    jobs = start(spark_argv, s, spark_log)
    total = per_symbol * len(s.symbols)
    try:
        # Kills at random points of progress (fractions of the trades in raw_trades).
        for fraction in sorted(rng.uniform(0.05, 0.8) for _ in range(kills)):
            target = int(total * fraction)
            wait_until(lambda t=target: len(pg_trades(s, s.symbols)) >= t, 300,
                       what=f"{target} trades before a kill (log: {spark_log})")  # fmt: skip
            jobs.kill()  # SIGKILL: no shutdown hooks, checkpoints as they are
            jobs.wait(30)
            jobs = start(spark_argv, s, spark_log)
        trades = wait_until(lambda: recorded(record, s.symbols, per_symbol), 300,
                            what="the simulation")  # fmt: skip
        assert_exact(s, trades, spark, spark_log)
        if while_running is not None:
            while_running()
    finally:
        stop(jobs)
        stop(ingest)
        sim.stop()
