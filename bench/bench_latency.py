"""Benchmark: serving latency and memory of the whole local stack at a live-like rate.

Runs ``cryptoflow up --source sim`` (simulator, ingestion, the pipeline's one streaming query
``trades``, embedded broker and PostgreSQL) on a private stack for ``--seconds`` after a
warm-up, then reports

* raw_trades: p50 / p99 of (PostgreSQL commit time - trade_time) of the trades committed in
  the measured period, commit time from ``pg_xact_commit_timestamp(xmin)`` (the embedded
  cluster tracks commit timestamps);
* metrics: p50 / p99 of (commit time of the final value - window_end) of the short windows
  that ended in the measured period. A window's row changes with every batch that folds a
  trade into it; its final value is its last change, the commit of the row version that
  stays. Measured ``--settle`` seconds after the period, so the windows that ended just
  before its end have their last trades folded;
* the peak memory of every process of the run together (PSS);
* the CPU each part of the stack used over the measured period, in % of one core.

    .venv/bin/python bench/bench_latency.py --rate 30 --seconds 180
"""

from __future__ import annotations

import argparse
import time

from stack import (
    add_set_option,
    cpu_report,
    percentile,
    private_stack,
    running_up,
    save,
    setting_args,
)

LAT_TRADES = """
SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - trade_time) * 1000
FROM raw_trades WHERE pg_xact_commit_timestamp(xmin) BETWEEN %(since)s AND %(until)s"""
#: The row version that stays is the window's last change (its final value).
LAT_METRICS = """
SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - window_end) * 1000
FROM metrics
WHERE window_end - window_start = make_interval(secs => %(length)s)
  AND window_end > %(since)s AND window_end <= %(until)s"""


def _now(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        return cur.fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=30.0, help="simulated trades/s (live-like: 30)")
    ap.add_argument("--seconds", type=float, default=180.0, help="measured period")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds ignored after start")
    ap.add_argument(
        "--settle", type=float, default=10.0,
        help="seconds after the period before the windows' final values are read",
    )  # fmt: skip
    add_set_option(ap)
    args = ap.parse_args()

    up_args = ("--source", "sim", "--sim-rate", str(args.rate), "--sim-seed", "1",
               "--status-every", "10")  # fmt: skip
    with private_stack(setting_args(args.set)) as s, running_up(s, *up_args) as run:
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
        since = _now(conn)
        print(f"bench: measuring {args.seconds:.0f}s from {since}", flush=True)
        measured_from = time.time()
        time.sleep(args.seconds)
        until, measured_to = _now(conn), time.time()
        cpu = run.sampler.cpu_between(measured_from, measured_to)
        time.sleep(args.settle)
        if up.poll() is not None:
            raise SystemExit(f"cryptoflow up exited during the run; see {log}")
        span = {"since": since, "until": until, "length": s.window_seconds}
        with conn.cursor() as cur:
            cur.execute(LAT_TRADES, span)
            trades = [float(r[0]) for r in cur.fetchall()]
            cur.execute(LAT_METRICS, span)
            windows = [float(r[0]) for r in cur.fetchall()]
    seconds = measured_to - measured_from
    spark_share = cpu.get("spark", 0.0) / seconds
    result = {
        "rate": args.rate,
        "settings": args.set,
        "seconds": seconds,
        "raw_trades": {"rows": len(trades), "p50_ms": percentile(trades, 0.5),
                       "p99_ms": percentile(trades, 0.99)},
        "metrics_final": {"windows": len(windows), "window_seconds": s.window_seconds,
                          "p50_ms": percentile(windows, 0.5), "p99_ms": percentile(windows, 0.99)},
        "spark_cpu_share_of_one_core": spark_share,
        "peak_rss_mb": run.sampler.peak_kb / 1024,
        "peak_rss_by_process_mb": {k: v / 1024 for k, v in run.sampler.peak_detail.items()},
        "cpu_seconds": cpu,
    }  # fmt: skip
    m = result["metrics_final"]
    print(
        f"raw_trades commit-trade_time: p50={result['raw_trades']['p50_ms']:.0f} ms "
        f"p99={result['raw_trades']['p99_ms']:.0f} ms over {len(trades)} rows\n"
        f"metrics({s.window_seconds}s) final value's commit-window_end: p50={m['p50_ms']:.0f} ms "
        f"p99={m['p99_ms']:.0f} ms over {len(windows)} windows\n"
        f"peak memory of the stack: {result['peak_rss_mb']:.0f} MB\n"
        f"Spark {spark_share:.0%} of one core; CPU over the measured period: "
        f"{cpu_report(cpu, seconds)}"
    )
    print(f"saved {save('latency', result)}")


if __name__ == "__main__":
    main()
