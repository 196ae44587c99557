"""``cryptoflow up``: the whole pipeline in one process tree, kept running.

The simulator (``--source sim``) and ingestion run as child processes (their own cores and
GILs, so a busy Spark driver never stalls the WebSocket reader); the pipeline's streaming
query runs in this process's Spark application. Anything that dies is restarted with
backoff; Ctrl-C stops everything cleanly and a rerun resumes from the checkpoints.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptoflow.core.config import Settings

log = logging.getLogger("cryptoflow.up")

MAX_BACKOFF_S = 60.0


def backoff(failures: int, base: float = 2.0) -> float:
    """Seconds to wait before restart number ``failures`` (1, 2, ...): 2, 4, 8 ... 60."""
    return min(MAX_BACKOFF_S, base * 2 ** max(0, failures - 1))


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the supervisor dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class ChildProcess:
    """A command kept running: restarted with backoff when it exits while not stopping."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    failures: int = 0
    restart_at: float = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        log.info("%s started pid=%d log=%s", self.name, self.proc.pid, self.log_path)

    def check(self) -> None:
        """Restart the child if it exited (after a backoff that grows with each failure)."""
        if self.proc is None or self.proc.poll() is None:
            return
        now = time.monotonic()
        if self.restart_at == 0.0:
            self.failures += 1
            self.restart_at = now + backoff(self.failures)
            log.error(
                "%s exited code=%s restart_in=%.0fs see=%s",
                self.name, self.proc.returncode, self.restart_at - now, self.log_path,
            )  # fmt: skip
        elif now >= self.restart_at:
            self.restart_at = 0.0
            self.start()

    def stop(self, timeout: float = 40.0) -> None:
        """SIGINT (ingestion flushes its producer), then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(2)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        log.info("%s stopped code=%s", self.name, self.proc.returncode)

    def last_line(self, contains: str) -> str:
        """The newest line of the child's log that contains ``contains`` (for status)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 16384))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return next((ln for ln in reversed(lines) if contains in ln), "")


@dataclass
class StageRunner:
    """One streaming query, restarted from its checkpoint with backoff when it fails."""

    stage: str
    start_fn: Callable[[], object]
    query: object | None = None
    failures: int = 0
    restart_at: float = 0.0
    last_error: str = ""

    def start(self) -> None:
        self.query = self.start_fn()

    def stop(self) -> None:
        """Stop the query between batches and bring Delta gold up to date."""
        from pipelines.job import stop

        if self.query is not None:
            stop(self.query)

    def check(self) -> None:
        q = self.query
        if q is not None and q.isActive:
            return
        now = time.monotonic()
        if self.restart_at == 0.0:
            if q is not None:
                q.gold.stop(final=False)
            self.failures += 1
            exc = q.exception() if q is not None else None
            self.last_error = str(exc).splitlines()[0][:300] if exc else "stopped"
            self.restart_at = now + backoff(self.failures)
            log.error(
                "stage=%s failed restart_in=%.0fs error=%s",
                self.stage, self.restart_at - now, self.last_error,
            )  # fmt: skip
        elif now >= self.restart_at:
            self.restart_at = 0.0
            try:
                self.start()
                log.info("stage=%s restarted failures=%d", self.stage, self.failures)
            except Exception as e:  # noqa: BLE001 - keep supervising; retried after backoff
                self.query = None
                self.last_error = str(e).splitlines()[0][:300]

    def status(self) -> str:
        from pipelines.progress import last_progress

        q = self.query
        if q is None or not q.isActive:
            return f"{self.stage}: down ({self.last_error or 'starting'})"
        p = last_progress(q)
        parts = [f"{self.stage}: batch={p.get('batchId', '-')}"]
        parts.append(f"rows/s={p.get('processedRowsPerSecond', 0.0):.0f}")
        duration = (p.get("durationMs") or {}).get("triggerExecution")
        if duration is not None:
            parts.append(f"batch_ms={duration}")
        for src in p.get("sources") or []:
            lag = (src.get("metrics") or {}).get("maxOffsetsBehindLatest")
            if lag is not None:
                parts.append(f"kafka_lag={lag}")
        observed = (p.get("observedMetrics") or {}).get(self.stage) or {}
        if hasattr(observed, "asDict"):  # PySpark gives observed metrics as a Row
            observed = observed.asDict()
        for key in ("latency_p50_ms", "latency_p99_ms", "quarantined", "late"):
            if observed.get(key) is not None:
                parts.append(f"{key}={observed[key]}")
        stats = q.handler.stats
        if stats.latency_p50_ms is not None:
            parts.append(f"e2e_p50_ms={stats.latency_p50_ms:.0f}")
        parts.append(f"rows={stats.total_output} quarantined={stats.total_quarantined}")
        return " ".join(parts)


@dataclass
class UpOptions:
    """What ``cryptoflow up`` runs."""

    source: str = "binance"
    pipeline: bool = True
    ingest: bool = True
    csv_paths: Sequence[Path] = ()
    speed: float | None = None
    simulator_args: list[str] = field(default_factory=list)
    status_every_s: float = 5.0


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child: this one's, with every setting spelled out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOFLOW_")}
    env.update(settings.to_env())
    return env


def cryptoflow_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cryptoflow", *args]


def stop_on_signals(stop: threading.Event) -> None:
    """SIGINT / SIGTERM set ``stop`` (the loop then shuts down in order)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())


def prepare(settings: Settings, progress: Callable[[str], None]) -> list[str]:
    """Services, schema and topic as ``cryptoflow setup`` makes them. Returns the embedded
    services this call started (``up`` stops those again when it stops)."""
    from cryptoflow.core import services
    from cryptoflow.provision import run_steps

    run_steps(settings, progress=progress, skip=("python dependencies", "services", "schema",
                                                 "kafka topic"))  # fmt: skip
    started = services.up(settings, progress)
    run_steps(settings, progress=progress, skip=(), only=("schema", "kafka topic"))
    return started


def run_pipeline(
    settings: Settings,
    options: UpOptions,
    stop: threading.Event,
    progress: Callable[[str], None] = print,
) -> None:
    """Run until ``stop`` is set: children and stages supervised, a status line per stage."""
    from cryptoflow.core.spark import get_spark
    from expectations.schedule import PeriodicValidation
    from pipelines import job
    from pipelines.progress import FailureLogger

    settings = settings.replace(source=options.source)
    stop_on_signals(stop)
    started_services = prepare(settings, progress)
    logs = settings.data_dir.resolve() / "logs"
    children: list[ChildProcess] = []
    if options.source == "sim" and options.ingest:
        children.append(
            ChildProcess(
                "simulator",
                cryptoflow_argv("simulate", *options.simulator_args),
                child_env(settings),
                logs / "simulator.log",
            )  # fmt: skip
        )
    if options.ingest:
        args = ["ingest", "--source", options.source]
        args += [a for p in options.csv_paths for a in ("--csv", str(p))]
        if options.speed is not None:
            args += ["--speed", str(options.speed)]
        children.append(
            ChildProcess("ingest", cryptoflow_argv(*args), child_env(settings), logs / "ingest.log")
        )
    runners: list[StageRunner] = []
    spark = validation = None
    try:
        for child in children:
            child.start()
        if options.pipeline:
            spark = get_spark(settings, "cryptoflow-up")
            stop_on_signals(stop)  # the SparkContext just replaced the SIGINT handler
            spark.streams.addListener(FailureLogger())
            validation = PeriodicValidation(spark, settings).start()
            runner = StageRunner(job.QUERY, lambda: job.start(spark, settings))
            runner.start()
            runners.append(runner)
        names = [c.name for c in children] + [r.stage for r in runners]
        progress(f"up: running {', '.join(names)}; source={options.source}; Ctrl-C stops")
        next_status = time.monotonic() + options.status_every_s
        while not stop.wait(0.5):
            for child in children:
                child.check()
            for runner in runners:
                runner.check()
            if time.monotonic() >= next_status:
                next_status += options.status_every_s
                for line in status_lines(children, runners):
                    progress(line)
    finally:
        progress("up: stopping")
        for child in children:
            if child.name == "ingest":
                child.stop()  # ingestion first, so it can flush what it received
        if validation is not None:
            validation.stop()
        for runner in runners:
            runner.stop()
        for child in children:
            child.stop()
        if spark is not None:
            spark.stop()
        if started_services:
            from cryptoflow.core import services

            services.down(settings, progress, only=tuple(started_services))
        progress("up: stopped; run `cryptoflow up` again to resume from the checkpoints")


def status_lines(children: Sequence[ChildProcess], runners: Sequence[StageRunner]) -> list[str]:
    lines = []
    for child in children:
        alive = child.proc is not None and child.proc.poll() is None
        detail = child.last_line("frames/s=") if child.name == "ingest" else ""
        detail = detail[detail.find("frames/s=") :] if detail else ""
        lines.append(f"{child.name}: {'running' if alive else 'down'} {detail}".rstrip())
    lines.extend(r.status() for r in runners)
    return lines
