"""Benchmark: serving latency and memory of the whole local stack at a live-like rate.

Runs ``cryptoflow up --source sim`` (simulator, ingestion, bronze, silver, gold, embedded
broker and Postgres) on a private stack for ``--seconds`` after a warm-up, then reports

* raw_trades: p50 / p99 of (Postgres commit time - trade_time), commit time from
  ``pg_xact_commit_timestamp(xmin)`` (the embedded cluster tracks commit timestamps);
* metrics: p50 / p99 of (Postgres commit time - window_end), newest version of each row;
* the peak resident memory of every process of the run together;
* the CPU each part of the stack used over the measured period, in % of one core.

    .venv/bin/python bench/bench_latency.py --rate 30 --seconds 180
"""

from __future__ import annotations

import argparse
import time

from stack import cpu_report, percentile, private_stack, running_up, save

LAT_TRADES = """
SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - trade_time) * 1000
FROM raw_trades WHERE pg_xact_commit_timestamp(xmin) >= %s"""
LAT_METRICS = """
SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - window_end) * 1000,
       window_end - window_start
FROM metrics WHERE pg_xact_commit_timestamp(xmin) >= %s"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=30.0, help="simulated trades/s (live-like: 30)")
    ap.add_argument("--seconds", type=float, default=180.0, help="measured period")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds ignored after start")
    args = ap.parse_args()

    up_args = ("--source", "sim", "--sim-rate", str(args.rate), "--sim-seed", "1",
               "--status-every", "10")  # fmt: skip
    with private_stack() as s, running_up(s, *up_args) as run:
        up, log, conn = run.proc, run.log, run.conn
        # Warm-up: until the first metrics row is committed, then --warmup more seconds.
        while True:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM metrics")
                if cur.fetchone()[0]:
                    break
            if up.poll() is not None:
                raise SystemExit(f"cryptoflow up exited early; see {log}")
            time.sleep(1)
        time.sleep(args.warmup)
        with conn.cursor() as cur:
            cur.execute("SELECT now()")
            since = cur.fetchone()[0]
        print(f"bench: measuring {args.seconds:.0f}s from {since}", flush=True)
        measured_from = time.time()
        time.sleep(args.seconds)
        cpu = run.sampler.cpu_between(measured_from, time.time())
        with conn.cursor() as cur:
            cur.execute(LAT_TRADES, (since,))
            trades = [float(r[0]) for r in cur.fetchall()]
            cur.execute(LAT_METRICS, (since,))
            rows = cur.fetchall()
    short = [float(r[0]) for r in rows if r[1].total_seconds() == s.window_seconds]
    result = {
        "rate": args.rate,
        "seconds": args.seconds,
        "raw_trades": {"rows": len(trades), "p50_ms": percentile(trades, 0.5),
                       "p99_ms": percentile(trades, 0.99)},
        "metrics": {"rows": len(short), "p50_ms": percentile(short, 0.5),
                    "p99_ms": percentile(short, 0.99)},
        "peak_rss_mb": run.sampler.peak_kb / 1024,
        "peak_rss_by_process_mb": {k: v / 1024 for k, v in run.sampler.peak_detail.items()},
        "cpu_seconds": cpu,
    }  # fmt: skip
    print(
        f"raw_trades commit-trade_time: p50={result['raw_trades']['p50_ms']:.0f} ms "
        f"p99={result['raw_trades']['p99_ms']:.0f} ms over {len(trades)} rows\n"
        f"metrics({s.window_seconds}s) commit-window_end: p50={result['metrics']['p50_ms']:.0f} ms "
        f"p99={result['metrics']['p99_ms']:.0f} ms over {len(short)} rows\n"
        f"peak resident memory of the stack: {result['peak_rss_mb']:.0f} MB\n"
        f"CPU over the measured period: {cpu_report(cpu, args.seconds)}"
    )
    print(f"saved {save('latency', result)}")


if __name__ == "__main__":
    main()
