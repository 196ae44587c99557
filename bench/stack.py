"""A private stack for benchmarks: embedded Kafka + PostgreSQL in a temp data dir, free ports,
schema applied; the producers of trade frames (a backlog, or a live-like rate); plus
process-tree memory and CPU sampling. Nothing here is timed itself."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptoflow.core import db, services  # noqa: E402
from cryptoflow.core.config import Settings, load_settings  # noqa: E402
from cryptoflow.core.services import kafka, postgres  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_set_option(ap: argparse.ArgumentParser) -> None:
    """``--set NAME=VALUE`` (repeatable) on a bench's command line (``setting_args``)."""
    ap.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="a setting for this run (a field of cryptoflow.core.config.Settings), repeatable; "
        "e.g. --set gold_sync_interval_ms=60000",
    )  # fmt: skip


def setting_args(items: list[str]) -> dict[str, str]:
    """``--set NAME=VALUE`` options as ``CRYPTOFLOW_NAME`` variables for ``private_stack``."""
    environ = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bench: --set {item!r}: expected NAME=VALUE (a settings field)")
        environ[f"CRYPTOFLOW_{name.strip().upper()}"] = value
    return environ


@contextlib.contextmanager
def private_stack(environ: dict[str, str] | None = None, **overrides) -> Iterator[Settings]:
    """Services up in a throwaway data dir (kept with --keep via CRYPTOFLOW_BENCH_KEEP=1).
    ``environ``: settings as ``CRYPTOFLOW_*`` variables (``setting_args``); nothing is read
    from this process's environment."""
    data_dir = Path(tempfile.mkdtemp(prefix="cryptoflow-bench-"))
    data_dir.chmod(0o755)
    s = load_settings(
        environ=environ or {}, dotenv=None, data_dir=data_dir, kafka_port=free_port(),
        kafka_controller_port=free_port(), postgres_port=free_port(), sim_port=free_port(),
        **overrides,
    )  # fmt: skip
    services.up(s, progress=lambda line: print(f"bench: {line}", flush=True))
    try:
        db.apply_migrations(postgres.admin_dsn(s))
        postgres.ensure_login_roles(s)
        kafka.ensure_topics(s)
        yield s
    finally:
        services.down(s, progress=lambda _: None)
        if not os.environ.get("CRYPTOFLOW_BENCH_KEEP"):
            shutil.rmtree(data_dir, ignore_errors=True)


#: The symbols and price levels of ``produce``'s trades.
LEVELS = {"BTCUSDT": 90_000.0, "ETHUSDT": 3_000.0, "BNBUSDT": 860.0}


def produce(s: Settings, n: int, seed: int = 1) -> None:
    """``n`` Binance combined-stream trade frames into the raw topic (three symbols, ids
    consecutive per symbol), spread at 1,000 trades/s of trade time ending now: a backlog
    for the drains."""
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


def produce_live(s: Settings, rate: float, stop: threading.Event) -> None:
    """``rate`` trade frames a second into the raw topic until ``stop``, each with trade and
    event time = now (``T`` = ``E``): latency from the trade is latency from production."""
    producer = Producer({"bootstrap.servers": s.bootstrap_servers, "linger.ms": 5})
    trade_id, symbols = 0, s.symbols
    while not stop.wait(1 / rate):
        trade_id += 1
        symbol = symbols[trade_id % len(symbols)]
        now = int(time.time() * 1000)
        data = {"e": "trade", "E": now, "s": symbol, "t": trade_id, "p": "100.00",
                "q": "0.1", "T": now, "m": False, "M": True}  # fmt: skip
        frame = {"stream": f"{symbol.lower()}@trade", "data": data}
        producer.produce(s.kafka_topic, json.dumps(frame).encode(), key=symbol.encode())
        producer.poll(0)
    producer.flush(10)


@dataclass
class UpRun:
    """A running ``cryptoflow up`` of a benchmark: the process, its log, the stack's memory
    and CPU sampler and an autocommit admin connection for polling the serving tables."""

    proc: subprocess.Popen
    log: Path
    sampler: StackSampler
    conn: object


@contextlib.contextmanager
def running_up(s: Settings, *args: str) -> Iterator[UpRun]:
    """``cryptoflow up ARGS`` on the private stack, stopped with Ctrl-C (SIGINT) at the end."""
    from cryptoflow.core.db import connect
    from cryptoflow.supervisor import child_env, cryptoflow_argv

    log = s.data_dir / "up.log"
    proc = subprocess.Popen(
        cryptoflow_argv("up", *args), env=child_env(s), stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    sampler = StackSampler(lambda: service_pids(s) | {proc.pid})
    sampler.start()
    conn = connect(postgres.admin_dsn(s))
    conn.autocommit = True
    try:
        yield UpRun(proc, log, sampler, conn)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
        sampler.stop()
        conn.close()


def _pss_kb(pid: int) -> int:
    """Proportional set size (shared pages split between sharers), else RSS."""
    for name, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1])
        except OSError:
            continue
    return 0


def _children(pids: set[int]) -> set[int]:
    """``pids`` and all their descendants."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, grew = set(pids), True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree and p not in tree}
        tree |= new
        grew = bool(new)
    return {p for p in tree if p in parent}


def service_pids(s: Settings) -> set[int]:
    """The embedded broker's and postmaster's pids."""
    pids = set()
    for f in (s.data_dir / "kafka" / "broker.pid", postgres.pgdata(s) / "postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.add(int(f.read_text().split()[0]))
    return pids


class StackSampler(threading.Thread):
    """Every second, over the process trees under ``roots()``: the peak summed memory (PSS)
    and the CPU seconds used so far per part of the stack (``process_group``)."""

    def __init__(self, roots, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval = roots, interval
        self.peak_kb, self.peak_detail = 0, {}
        self.cpu_timeline: list[tuple[float, dict[str, float]]] = []  # (epoch s, group -> s)
        self._cpu: dict[int, tuple[str, float]] = {}  # pid -> (group, CPU s); exited ones kept
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            detail = {}
            for pid in _children(set(self.roots())):
                cmdline = _comm(pid)
                detail[f"{pid} {cmdline[:80]}"] = _pss_kb(pid)
                cpu = _cpu_seconds(pid)
                if cpu is not None:
                    self._cpu[pid] = (process_group(cmdline), cpu)
            total = sum(detail.values())
            if total > self.peak_kb:
                self.peak_kb, self.peak_detail = total, detail
            groups: dict[str, float] = {}
            for group, cpu in self._cpu.values():
                groups[group] = groups.get(group, 0.0) + cpu
            self.cpu_timeline.append((time.time(), groups))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def cpu_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds per process group between two epoch times (nearest samples inside)."""
        inside = [(t, g) for t, g in self.cpu_timeline if start <= t <= end]
        if len(inside) < 2:
            return {}
        (_, first), (_, last) = inside[0], inside[-1]
        scale = (end - start) / (inside[-1][0] - inside[0][0])
        used = {k: (v - first.get(k, 0.0)) * scale for k, v in last.items()}
        return dict(sorted(used.items(), key=lambda kv: -kv[1]))


def process_group(cmdline: str) -> str:
    """The part of the stack a process is: ``spark``, ``kafka``, ``postgres``, ``pyspark
    workers``, ``cryptoflow <command>`` (``up``'s Python, ingestion, the simulator), else its
    program name."""
    argv = cmdline.split()
    if not argv:
        return "?"
    if "kafka.Kafka" in argv:
        return "kafka"
    if "org.apache.spark.deploy.SparkSubmit" in argv:
        return "spark"
    if "pyspark.daemon" in argv:
        return "pyspark workers"
    if os.path.basename(argv[0]).startswith("postgres"):
        return "postgres"
    names = [os.path.basename(a) for a in argv]
    if "cryptoflow" in names[:3] and names.index("cryptoflow") + 1 < len(names):
        return f"cryptoflow {names[names.index('cryptoflow') + 1]}"  # -m or the entry point
    return names[0]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_report(used: dict[str, float], seconds: float) -> str:
    """``spark 151%, postgres 12%, ... (together 170% of one core; 2 cores)``: the CPU
    seconds ``used`` per group over ``seconds``, in % of one core."""
    shares = {group: cpu / seconds for group, cpu in used.items()}
    parts = [f"{group} {share:.0%}" for group, share in shares.items() if share >= 0.005]
    total = sum(used.values()) / seconds
    return f"{', '.join(parts)} (together {total:.0%} of one core; {os.cpu_count()} cores)"


def commit_span_sql(table: str) -> str:
    """SQL: epoch of the first and the last commit that wrote ``table``, the rows committed
    after the first, and the number of commits (``table`` is a benchmark's own constant)."""
    return f"""
WITH c AS (SELECT pg_xact_commit_timestamp(xmin) AS at, count(*) AS n FROM {table} GROUP BY 1)
SELECT extract(epoch FROM min(at)), extract(epoch FROM max(at)),
       sum(n) FILTER (WHERE at > (SELECT min(at) FROM c)), count(*)
FROM c"""


def cpu_per_trade(cpu: dict[str, float], trades: int) -> tuple[dict[str, float], str]:
    """µs of CPU per trade per group, and ``spark 95, postgres 12; together 107``."""
    us = {group: seconds / max(trades, 1) * 1e6 for group, seconds in cpu.items()}
    parts = ", ".join(f"{g} {v:.0f}" for g, v in us.items() if v >= 0.5)
    return us, f"{parts}; together {sum(us.values()):.0f}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def drain_figures(
    name: str,
    trades: int,
    started_epoch: float,
    total: float,
    span_row: tuple,
    whole: StackSampler,
    pipeline: StackSampler,
    log: Path,
) -> dict:
    """The figures of one drain: ``span_row`` is ``commit_span_sql``'s row, ``whole`` samples
    the stack and ``pipeline`` the drained pipeline's own processes."""
    first, last, after, commits = span_row
    span, after_first = float(last - first), int(after or 0)
    cpu = whole.cpu_between(float(first), float(last))
    cpu_us, _ = cpu_per_trade(cpu, after_first)
    return {
        "pipeline": name,
        "trades": trades,
        "seconds_total": total,
        "trades_per_s_total": trades / total,
        "seconds_to_first_commit": float(first) - started_epoch,
        "commits": commits,
        "seconds_first_to_last_commit": span,
        "trades_after_first_commit": after_first,
        "trades_per_s_steady": after_first / span if span else None,
        "peak_rss_mb": whole.peak_kb / 1024,
        "peak_rss_mb_pipeline": pipeline.peak_kb / 1024,
        "cpu_seconds_steady": cpu,
        "cpu_us_per_trade_steady": cpu_us,
        "cpu_us_per_trade_budget": os.cpu_count() / 20_000 * 1e6,  # the 20,000 trades/s target
        "log": str(log),
    }


def drain_report(label: str, r: dict) -> list[str]:
    """``drain_figures`` in words: the rates, peak memory and the CPU per trade."""
    lines = [
        f"{label} drained {r['trades']} trades in {r['seconds_total']:.0f}s: "
        f"{r['trades_per_s_total']:.0f} trades/s including Spark start-up (first commit after "
        f"{r['seconds_to_first_commit']:.1f}s); {r['trades_per_s_steady'] or 0:.0f} trades/s "
        f"between the first and the last of {r['commits']} commits "
        f"({r['trades_after_first_commit']} trades in {r['seconds_first_to_last_commit']:.1f}s); "
        f"peak memory {r['peak_rss_mb']:.0f} MB (pipeline {r['peak_rss_mb_pipeline']:.0f} MB, "
        f"the rest Kafka and PostgreSQL)"
    ]
    if r["cpu_seconds_steady"]:  # a span of two samples at least
        _, per_trade = cpu_per_trade(r["cpu_seconds_steady"], r["trades_after_first_commit"])
        lines.append(
            f"CPU between those commits: "
            f"{cpu_report(r['cpu_seconds_steady'], r['seconds_first_to_last_commit'])}; "
            f"µs per trade: {per_trade} (20,000 trades/s on {os.cpu_count()} cores allows "
            f"{r['cpu_us_per_trade_budget']:.0f})"
        )
    return lines
