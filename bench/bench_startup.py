"""Benchmark: how long `cryptoflow up --source sim` takes to put its first row in raw_trades,
as a new user meets it (JARs cached, a fresh data directory, no service running).

Each run: a fresh data dir and free ports, the JARs and the Hadoop file system JAR cached
first (not timed), then ``cryptoflow up --source sim`` in a session of its own, stdout read
line by line; raw_trades polled every 0.1 s. Then SIGTERM to its process group, as a user's
`kill`, and the stop timed; the data dir is removed and no process of the run may be left.

Prints, per run and as the median over runs, the seconds from launch to each phase:

    output       the first line (the interpreter, cryptoflow's imports, the first setup step)
    postgres     PostgreSQL started (initdb the first time)
    kafka        the Kafka broker started (its storage formatted the first time)
    services     schema and topic ready (Kafka and PostgreSQL start side by side)
    spark        the Spark session ready (the JVM starts beside the services)
    query        the streaming query started (the Delta tables created, the plan made)
    batch0       the first micro-batch done (its own duration and steps from its log line)
    first_row    the first row in raw_trades (served before the batch appends to silver)
    stop         SIGTERM to the process exit (stopping everything, the services included)

    .venv/bin/python bench/bench_startup.py --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stack import RESULTS, free_port  # noqa: E402
from cryptoflow.core.config import Settings, load_settings  # noqa: E402
from cryptoflow.core.db import connect  # noqa: E402
from cryptoflow.core.services import postgres  # noqa: E402
from cryptoflow.core.services.process import port_open  # noqa: E402
from cryptoflow.provision import run_steps  # noqa: E402
from cryptoflow.supervisor import child_env  # noqa: E402

MARKER = "CF_BENCH_STARTUP"  # in every process of a run: none may be left after it
PHASES = ("output", "postgres", "kafka", "services", "spark", "query", "batch0", "first_row",
          "stop")  # fmt: skip
# A line of the output (a progress line or a log record) that marks a phase.
PATTERNS = {
    "postgres": re.compile(r"^postgres: started"),
    "kafka": re.compile(r"^kafka: started"),
    "services": re.compile(r"kafka topic: "),
    "spark": re.compile(r"spark session master="),
    "query": re.compile(r"trades started topic="),
    "batch0": re.compile(r"trades batch=0 "),
}


def settings_for(data_dir: Path) -> Settings:
    return load_settings(
        environ={}, dotenv=None, data_dir=data_dir, kafka_port=free_port(),
        kafka_controller_port=free_port(), postgres_port=free_port(), sim_port=free_port(),
    )  # fmt: skip


def survivors(marker: str) -> list[str]:
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(entry.name)
            except OSError:
                continue
    return found


def first_row_at(s: Settings, t0: float, proc: subprocess.Popen, timeout: float) -> float | None:
    """Seconds from ``t0`` to the first row in raw_trades (polled every 0.1 s)."""
    deadline = time.monotonic() + timeout
    conn = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if conn is None and port_open("127.0.0.1", s.postgres_port):
                    conn = connect(postgres.admin_dsn(s))
                    conn.autocommit = True
                if conn is not None:
                    with conn.cursor() as cur:
                        cur.execute("SELECT EXISTS (SELECT 1 FROM raw_trades)")
                        if cur.fetchone()[0]:
                            return time.monotonic() - t0
            except Exception:  # noqa: BLE001 - not up yet: credentials, database, table
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.1)
    finally:
        if conn is not None:
            conn.close()
    return None


def one_run(rate: float, timeout: float, echo: bool, code: Path | None) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="cryptoflow-bench-startup-"))
    data_dir.chmod(0o755)  # the postgres user traverses it when running as root
    s = settings_for(data_dir)
    run_steps(s, jars_only=True, progress=lambda _: None)  # cached before timing
    marker = uuid.uuid4().hex
    env = {**child_env(s), MARKER: marker}
    if code is not None:  # another checkout's cryptoflow (a before/after comparison)
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(":")
    argv = [sys.executable, "-m", "cryptoflow", "up", "--source", "sim", "--sim-rate", str(rate)]
    result: dict = {"phases": {}}
    lines: list[tuple[float, str]] = []
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, env=env, cwd=data_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True, text=True, errors="replace",
    )  # fmt: skip

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))
            if echo:
                print(f"  {lines[-1][0]:6.1f}s | {line.rstrip()}", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        first_row = first_row_at(s, t0, proc, timeout)
        if first_row is None:
            tail = "\n".join(text for _, text in lines[-30:])
            raise SystemExit(f"bench: no row in raw_trades after {timeout:.0f}s:\n{tail}")
        result["phases"]["first_row"] = first_row
        stop_at = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(180)
        result["phases"]["stop"] = time.monotonic() - stop_at
        result["exit_code"] = code
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        reader.join(10)
        left = survivors(marker)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        result["left_running"] = len(left)
        shutil.rmtree(data_dir, ignore_errors=True)
    if lines:
        result["phases"]["output"] = lines[0][0]
    for at, text in lines:
        for phase, pattern in PATTERNS.items():
            if phase not in result["phases"] and pattern.search(text):
                result["phases"][phase] = at
                if phase == "batch0":
                    m = re.search(r"duration_ms=(\d+).*steps_ms=(\S+)", text)
                    if m:
                        result["batch0_ms"] = int(m.group(1))
                        result["batch0_steps_ms"] = m.group(2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=30.0, help="simulated trades/s (live-like)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to the first row")
    ap.add_argument("--echo", action="store_true", help="print up's output as it comes")
    ap.add_argument(
        "--code", type=Path, metavar="DIR",
        help="run the cryptoflow of this checkout (e.g. a git worktree of an older commit)",
    )  # fmt: skip
    args = ap.parse_args()
    runs = []
    for i in range(1, args.runs + 1):
        r = one_run(args.rate, args.timeout, args.echo, args.code)
        runs.append(r)
        phases = " ".join(f"{p}={r['phases'][p]:.1f}" for p in PHASES if p in r["phases"])
        print(
            f"run {i}: {phases} exit={r.get('exit_code')} left_running={r['left_running']} "
            f"batch0_ms={r.get('batch0_ms')} steps_ms={r.get('batch0_steps_ms')}",
            flush=True,
        )
    print(f"\nseconds from `cryptoflow up --source sim` (median of {len(runs)}):")
    median = {}
    for phase in PHASES:
        values = [r["phases"][phase] for r in runs if phase in r["phases"]]
        if values:
            median[phase] = statistics.median(values)
            print(f"  {phase:10s} {median[phase]:6.1f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"startup-{datetime.now():%Y%m%dT%H%M%S}.json"
    code = str(args.code) if args.code else "this checkout"
    out.write_text(json.dumps({"runs": runs, "median": median, "rate": args.rate, "code": code},
                              indent=1))  # fmt: skip
    print(f"results: {out}")
    if any(r["left_running"] or r.get("exit_code") != 0 for r in runs):
        raise SystemExit("bench: a run did not stop cleanly (exit code or processes left)")


if __name__ == "__main__":
    main()
