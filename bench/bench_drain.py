"""Benchmark: drain pre-produced trades through bronze -> silver -> gold -> Postgres.

Produces ``--trades`` trade frames (combined-stream shape, three symbols, ids consecutive) into
the raw topic of a private stack, then starts ``cryptoflow up --no-ingest`` and waits until
Postgres ``raw_trades`` holds every trade and the short-window ``metrics`` rows count them all.
Reports trades/s over the whole drain (Spark start-up included) and between the first and the
last Postgres commit of raw_trades: the trades committed after the first commit divided by
the time between the two (the first commit's trades were processed before the span began).
For that span it also reports the CPU each part of the stack used, per trade: on N cores a
rate R leaves at most N / R CPU seconds per trade for everything together.

    .venv/bin/python bench/bench_drain.py --trades 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

from confluent_kafka import Producer
from stack import (
    commit_span_sql,
    cpu_per_trade,
    cpu_report,
    private_stack,
    running_up,
    save,
)

LEVELS = {"BTCUSDT": 90_000.0, "ETHUSDT": 3_000.0, "BNBUSDT": 860.0}


def produce(s, n: int, seed: int = 1) -> None:
    """``n`` trades spread at 1,000 trades/s of trade time ending now."""
    rng = random.Random(seed)
    producer = Producer({
        "bootstrap.servers": s.bootstrap_servers, "enable.idempotence": True, "acks": "all",
        "linger.ms": 50, "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000,
    })  # fmt: skip
    price = dict(LEVELS)
    next_id = dict.fromkeys(LEVELS, 1)
    t0 = int(time.time() * 1000) - n  # one trade per ms
    symbols = list(LEVELS)
    for i in range(n):
        sym = symbols[i % 3]
        price[sym] *= 1 + rng.gauss(0, 0.00005)
        trade = {"e": "trade", "E": t0 + i + 2, "s": sym, "t": next_id[sym],
                 "p": f"{price[sym]:.2f}", "q": f"{rng.lognormvariate(-4, 1.2):.5f}",
                 "T": t0 + i, "m": rng.random() < 0.5, "M": True}  # fmt: skip
        next_id[sym] += 1
        value = json.dumps({"stream": f"{sym.lower()}@trade", "data": trade}).encode()
        while True:
            try:
                producer.produce(s.kafka_topic, value, sym.encode(), timestamp=t0 + i + 80,
                                 headers=[("source", b"simulator")])  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise SystemExit("bench: not every trade reached Kafka")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args()
    with private_stack() as s:
        t = time.monotonic()
        produce(s, args.trades)
        print(f"bench: produced {args.trades} trades in {time.monotonic() - t:.1f}s", flush=True)
        started = time.monotonic()
        with running_up(s, "--no-ingest", "--status-every", "10") as run:
            up, log, conn = run.proc, run.log, run.conn
            while True:
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM raw_trades")
                    landed = cur.fetchone()[0]
                    cur.execute(
                        "SELECT coalesce(sum(trade_count), 0) FROM metrics "
                        "WHERE window_end - window_start = make_interval(secs => %s)",
                        (s.window_seconds,),
                    )
                    counted = int(cur.fetchone()[0])
                if landed >= args.trades and counted >= args.trades:
                    break
                if up.poll() is not None or time.monotonic() - started > args.timeout:
                    raise SystemExit(f"bench: stopped at {landed} trades; see {log}")
                time.sleep(2)
            total = time.monotonic() - started
            with conn.cursor() as cur:
                cur.execute(commit_span_sql("raw_trades"))
                first, last, after, commits = cur.fetchone()
                commit_span, after_first = float(last - first), int(after or 0)
    cpu = run.sampler.cpu_between(float(first), float(last))
    cpu_us, per_trade = cpu_per_trade(cpu, after_first)
    result = {
        "trades": args.trades,
        "seconds_total": total,
        "trades_per_s_total": args.trades / total,
        "raw_trades_commits": commits,
        "seconds_first_to_last_commit": commit_span,
        "trades_after_first_commit": after_first,
        "trades_per_s_steady": after_first / commit_span if commit_span else None,
        "peak_rss_mb": run.sampler.peak_kb / 1024,
        "cpu_seconds_steady": cpu,
        "cpu_us_per_trade_steady": cpu_us,
        "cpu_us_per_trade_budget": os.cpu_count() / 20_000 * 1e6,  # the 20,000 trades/s target
    }
    print(
        f"drained {args.trades} trades in {total:.0f}s: {result['trades_per_s_total']:.0f} "
        f"trades/s including Spark start-up; {result['trades_per_s_steady'] or 0:.0f} trades/s "
        f"between the first and the last of {commits} raw_trades commits ({after_first} trades "
        f"in {commit_span:.1f}s); peak memory {result['peak_rss_mb']:.0f} MB"
    )
    if commit_span:
        print(
            f"CPU between those commits: {cpu_report(cpu, commit_span)}; µs per trade: "
            f"{per_trade} (20,000 trades/s on "
            f"{os.cpu_count()} cores allows {result['cpu_us_per_trade_budget']:.0f})"
        )
    print(f"saved {save('drain', result)}")


if __name__ == "__main__":
    main()
