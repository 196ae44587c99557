"""Benchmark: drain pre-produced trades through the project's pipeline and the naive one.

Produces ``--trades`` trade frames (combined-stream shape, three symbols, ids consecutive) into
the raw topic of a private stack once, then drains them twice, one pipeline after the other,
each reading the topic from the earliest offset with its own checkpoint:

* the project: ``cryptoflow up --no-ingest`` (its one streaming query, ``trades``), until
  PostgreSQL ``raw_trades`` holds every trade and the short-window ``metrics`` rows count
  them all;
* the naive pipeline (``naive_pipeline.drain_naive``: one Kafka -> ``from_json`` -> JDBC
  append query, no Delta, no validation, no deduplication) into its own table.

``--naive-first`` reverses the order (alternate it between runs: the second drain finds the
topic in the page cache). For each it reports trades/s over the whole drain (Spark start-up
included) and between the first and the last PostgreSQL commit into its table: the trades
committed after the first commit divided by the time between the two (the first commit's
trades were processed before the span began); the CPU each part of the stack used over that
span, per trade (on N cores a rate R leaves at most N / R CPU seconds per trade for
everything together); the peak memory of the stack. Then the ratios project / naive.

    .venv/bin/python bench/bench_drain.py --trades 1000000
    .venv/bin/python bench/bench_drain.py --trades 1000000 --naive-first
"""

from __future__ import annotations

import argparse
import time

from naive_pipeline import drain_naive
from naive_pipeline import report as naive_report
from stack import (
    StackSampler,
    add_set_option,
    commit_span_sql,
    drain_figures,
    drain_report,
    private_stack,
    produce,
    running_up,
    save,
    setting_args,
)

from cryptoflow.core.config import Settings

#: What marks the pipeline's line per batch in ``cryptoflow up``'s log (``pipelines.batch``).
_BATCH = " pipelines.batch trades batch="


def drain_project(s: Settings, trades: int, timeout: float) -> dict:
    """Drain the ``trades`` in the topic with ``cryptoflow up --no-ingest``; its figures."""
    started = time.monotonic()
    started_epoch = time.time()
    with running_up(s, "--no-ingest", "--status-every", "10") as run:
        up, log, conn = run.proc, run.log, run.conn
        pipeline = StackSampler(lambda: {up.pid})  # up's Python and its Spark JVM alone
        pipeline.start()
        try:
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
                if landed >= trades and counted >= trades:
                    break
                if up.poll() is not None or time.monotonic() - started > timeout:
                    tail = "".join(log.read_text(errors="replace").splitlines(True)[-30:])
                    raise SystemExit(
                        f"bench: the project stopped at {landed} trades ({counted} counted in "
                        f"metrics); see {log}:\n{tail}"
                    )
                time.sleep(2)
            total = time.monotonic() - started
            with conn.cursor() as cur:
                cur.execute(commit_span_sql("raw_trades"))
                span_row = cur.fetchone()
        finally:
            pipeline.stop()
    figures = drain_figures(
        "project", trades, started_epoch, total, span_row, run.sampler, pipeline, log
    )
    figures["max_offsets_per_trigger"] = s.max_offsets_per_trigger
    # the query's line per batch (steps_ms: where the time went)
    figures["batch_log"] = [
        line for line in log.read_text(errors="replace").splitlines() if _BATCH in line
    ]
    return figures


def project_report(r: dict) -> str:
    lines = drain_report("project", r)
    lines += [f"  batch={line.split(_BATCH, 1)[1]}" for line in r["batch_log"]]
    return "\n".join(lines)


def ratios(project: dict, naive: dict) -> dict[str, float | None]:
    """project / naive of each figure (above 1: the project's is larger)."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    cpu = [sum(r["cpu_us_per_trade_steady"].values()) or None for r in (project, naive)]
    return {
        "trades_per_s_total": ratio(project["trades_per_s_total"], naive["trades_per_s_total"]),
        "trades_per_s_steady": ratio(project["trades_per_s_steady"], naive["trades_per_s_steady"]),
        "cpu_us_per_trade_steady": ratio(*cpu),
        "peak_rss_mb": ratio(project["peak_rss_mb"], naive["peak_rss_mb"]),
        "peak_rss_mb_pipeline": ratio(
            project["peak_rss_mb_pipeline"], naive["peak_rss_mb_pipeline"]
        ),
    }


def _x(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--timeout", type=float, default=3600.0, help="per pipeline")
    ap.add_argument(
        "--naive-first", action="store_true",
        help="drain with the naive pipeline first, then the project's",
    )  # fmt: skip
    ap.add_argument(
        "--max-offsets-per-trigger", type=int, default=None, metavar="N",
        help="records per micro-batch of both pipelines (default: the project's, "
        "CRYPTOFLOW_MAX_OFFSETS_PER_TRIGGER)",
    )  # fmt: skip
    add_set_option(ap)
    args = ap.parse_args()
    results: dict[str, dict] = {}
    overrides = {}
    if args.max_offsets_per_trigger is not None:
        overrides["max_offsets_per_trigger"] = args.max_offsets_per_trigger
    with private_stack(setting_args(args.set), **overrides) as s:
        t = time.monotonic()
        produce(s, args.trades)
        print(f"bench: produced {args.trades} trades in {time.monotonic() - t:.1f}s", flush=True)
        order = ("naive", "project") if args.naive_first else ("project", "naive")
        for name in order:
            print(f"bench: draining with the {name} pipeline", flush=True)
            if name == "project":
                results[name] = drain_project(s, args.trades, args.timeout)
                print(project_report(results[name]), flush=True)
                continue
            try:
                results[name] = drain_naive(s, args.trades, timeout=args.timeout)
            except RuntimeError as e:
                raise SystemExit(f"bench: {e}") from None
            print(naive_report(results[name]), flush=True)
    project, naive = results["project"], results["naive"]
    ratio = ratios(project, naive)
    print(
        f"project / naive: {_x(ratio['trades_per_s_total'])} the trades/s with Spark start-up, "
        f"{_x(ratio['trades_per_s_steady'])} between first and last commit, "
        f"{_x(ratio['cpu_us_per_trade_steady'])} the CPU per trade, "
        f"{_x(ratio['peak_rss_mb'])} the peak memory of the stack "
        f"({_x(ratio['peak_rss_mb_pipeline'])} of the pipeline's processes)"
    )
    result = {"trades": args.trades, "settings": args.set, "order": list(order),
              "project": project, "naive": naive, "project_over_naive": ratio}  # fmt: skip
    print(f"saved {save('drain', result)}")


if __name__ == "__main__":
    main()
