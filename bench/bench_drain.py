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

On a Spark cluster (issue 21), the project's pipeline alone, once per master, the same
backlog drained each time with fresh checkpoints, lake and serving tables: ``--workers 0,1,2``
drains with ``local[2]`` (0), then on a local standalone cluster of one and of two workers
(one core each, started and stopped here, ``cryptoflow.core.services.spark_cluster``);
``--master spark://HOST:PORT`` on a running cluster. It reports each rate, the ratio of the
two-worker and the one-worker rates, and the driver's CPU per trade (the ``up`` process
tree: its Python and the driver JVM; under ``local[2]`` that JVM also runs every task)
beside the executors' (the cluster's processes):

    .venv/bin/python bench/bench_drain.py --trades 1000000 --workers 0,1,2
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

from naive_pipeline import drain_naive
from naive_pipeline import report as naive_report
from stack import (
    StackSampler,
    add_set_option,
    commit_span_sql,
    drain_figures,
    drain_report,
    free_port,
    private_stack,
    produce,
    running_up,
    save,
    setting_args,
)

from cryptoflow.core.config import Settings
from cryptoflow.core.services import spark_cluster

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
        cluster = StackSampler(lambda: cluster_pids(s))  # workers and their executors
        cluster.start()
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
            cluster.stop()
    figures = drain_figures(
        "project", trades, started_epoch, total, span_row, run.sampler, pipeline, log
    )
    figures["max_offsets_per_trigger"] = s.max_offsets_per_trigger
    figures["master"] = s.spark_master_url
    first, last = float(span_row[0]), float(span_row[1])
    per_trade = 1e6 / max(figures["trades_after_first_commit"], 1)
    figures["driver_cpu_seconds_steady"] = pipeline.cpu_between(first, last)
    figures["driver_cpu_us_per_trade_steady"] = (
        sum(figures["driver_cpu_seconds_steady"].values()) * per_trade
    )
    figures["cluster_cpu_us_per_trade_steady"] = (
        sum(cluster.cpu_between(first, last).values()) * per_trade
    )
    # the query's line per batch (steps_ms: where the time went)
    figures["batch_log"] = [
        line for line in log.read_text(errors="replace").splitlines() if _BATCH in line
    ]
    return figures


def cluster_pids(s: Settings) -> set[int]:
    """The local cluster's master and workers (a worker's executors are its children)."""
    files = [spark_cluster.master_pid_file(s)]
    files += [spark_cluster.worker_pid_file(s, n) for n in range(1, s.spark_workers + 1)]
    pids = set()
    for f in files:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.add(int(f.read_text().split()[0]))
    return pids


def reset_serving(s: Settings) -> None:
    """Empty every serving table, so the next drain counts only its own trades."""
    from psycopg2 import sql

    from cryptoflow.core.db import connect
    from cryptoflow.core.services import postgres

    conn = connect(postgres.admin_dsn(s))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> %s",
                ("cryptoflow_migrations",),
            )
            tables = [sql.Identifier(row[0]) for row in cur.fetchall()]
            cur.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(tables)))
    finally:
        conn.close()


@contextlib.contextmanager
def on_master(s: Settings, workers: int, master: str | None, run: str) -> Iterator[Settings]:
    """Settings of one drain of a series: its own lake and checkpoints, empty serving
    tables, and the master: ``master``, else a local cluster of ``workers`` workers started
    here (0: the settings' own master, ``local[2]``)."""
    reset_serving(s)
    runs = s.data_dir.resolve() / "runs" / run
    s = s.replace(lake_root=str(runs / "lake"), checkpoint_root=str(runs / "checkpoints"))
    if master:
        yield s.replace(spark_master=master)
        return
    if not workers:
        yield s
        return
    s = s.replace(spark_workers=workers, spark_master_port=free_port(),
                  spark_master_ui_port=free_port())  # fmt: skip
    t = time.monotonic()
    spark_cluster.start(s)
    print(f"bench: a local cluster of {workers} worker(s) started in "
          f"{time.monotonic() - t:.0f}s at {s.spark_master_url}", flush=True)  # fmt: skip
    try:
        yield s
    finally:
        spark_cluster.stop(s)


def _label(workers: int) -> str:
    return {0: "local[2]", 1: "1 worker"}.get(workers, f"{workers} workers")


def drain_series(s: Settings, trades: int, workers: list[int], master: str | None,
                 timeout: float) -> dict:  # fmt: skip
    """Drain the backlog once per master (``--workers`` / ``--master``): each run's figures,
    the two-worker / one-worker ratio of the rates and the driver's CPU per trade."""
    labels = [master] if master else [_label(n) for n in workers]
    runs: dict[str, dict] = {}
    for n, label in zip([0] if master else workers, labels, strict=True):
        print(f"bench: draining with the project's pipeline on {label}", flush=True)
        with on_master(s, n, master, label.replace(" ", "-").replace("/", "_")) as run_s:
            runs[label] = drain_project(run_s, trades, timeout)
        print(project_report(runs[label]), flush=True)
        print(f"  driver CPU per trade {runs[label]['driver_cpu_us_per_trade_steady']:.0f} µs, "
              f"the cluster's (workers, executors) "
              f"{runs[label]['cluster_cpu_us_per_trade_steady']:.0f} µs", flush=True)  # fmt: skip
    out: dict = {"runs": runs}
    if _label(1) in runs and _label(2) in runs:
        one, two = runs[_label(1)], runs[_label(2)]
        out["two_over_one_workers"] = {
            key: two[key] / one[key] if one[key] and two[key] else None
            for key in ("trades_per_s_total", "trades_per_s_steady")
        }
    if "local[2]" in runs:
        local = runs["local[2]"]["driver_cpu_us_per_trade_steady"]
        out["driver_cpu_over_local"] = {
            label: r["driver_cpu_us_per_trade_steady"] / local if local else None
            for label, r in runs.items()
        }
    return out


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


def cluster_report(series: dict) -> None:
    for label, r in series["runs"].items():
        print(f"{label}: {r['trades_per_s_total']:.0f} trades/s with start-up, "
              f"{r['trades_per_s_steady'] or 0:.0f} steady; driver "
              f"{r['driver_cpu_us_per_trade_steady']:.0f} µs CPU per trade, cluster "
              f"{r['cluster_cpu_us_per_trade_steady']:.0f} µs")  # fmt: skip
    two = series.get("two_over_one_workers")
    if two:
        print(f"2 workers / 1 worker: {_x(two['trades_per_s_total'])} the trades/s with "
              f"start-up, {_x(two['trades_per_s_steady'])} steady")  # fmt: skip
    for label, ratio in series.get("driver_cpu_over_local", {}).items():
        print(f"driver CPU per trade on {label} / local[2]: {_x(ratio)}")


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
    ap.add_argument(
        "--workers", default=None, metavar="N,N,...",
        help="the project alone, once per entry: 0 = local[2], N = a local standalone cluster "
        "of N workers of one core each (e.g. 0,1,2)",
    )  # fmt: skip
    ap.add_argument(
        "--master", default=None, metavar="URL",
        help="the project alone on this running cluster (spark://HOST:PORT)",
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
        if args.workers is not None or args.master:
            workers = [int(n) for n in (args.workers or "0").split(",")]
            series = drain_series(s, args.trades, workers, args.master, args.timeout)
            cluster_report(series)
            result = {"trades": args.trades, "settings": args.set, **series}
            print(f"saved {save('drain-cluster', result)}")
            return
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
