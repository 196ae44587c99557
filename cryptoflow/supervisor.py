"""``cryptoflow up``: the whole pipeline in one process tree, kept running.

The simulator (``--source sim``) and ingestion run as child processes (their own cores and
GILs, so a busy Spark driver never stalls the WebSocket reader); the pipeline's streaming
query runs in this process's Spark application. Anything that dies is restarted with
backoff; Ctrl-C stops everything cleanly and a rerun resumes from the checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptoflow.console.status import (
    CONNECTED,
    CONNECTING,
    DISCONNECTED,
    DOWN,
    FAILED,
    REPLAYING,
    RESTARTING,
    RUNNING,
    STARTING,
    STOPPED,
    Snapshot,
    StageStatus,
    kind_frames,
    plain_lines,
)
from cryptoflow.console.view import StatusView, make_view
from cryptoflow.core.config import Settings
from cryptoflow.core.signals import SignalStop
from ingestion.status import ingest_status_path, read_status

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from expectations.schedule import PeriodicValidation
    from pipelines.job import PipelineQuery

log = logging.getLogger("cryptoflow.up")

MAX_BACKOFF_S = 60.0


def backoff(failures: int, base: float = 2.0) -> float:
    """Seconds to wait before restart number ``failures`` (1, 2, ...): 2, 4, 8 ... 60."""
    return min(MAX_BACKOFF_S, base * 2 ** max(0, failures - 1))


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
    status_file: Path | None = None  # JSON the child rewrites every second (ingestion's)

    def start(self) -> None:
        """Start the command in a session of its own (a signal to the supervisor's process
        group is the supervisor's to pass on, in order), SIGTERMed if the supervisor dies.
        Call from the main thread: the kernel signals the child when its forking thread ends."""
        from cryptoflow.core.services.process import die_with_parent

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
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
        """SIGINT, as Ctrl-C (ingestion flushes its producer, the simulator its record), then
        SIGKILL after ``timeout``; also ends a restart that is pending."""
        self.restart_at = 0.0
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs: killed", self.name, timeout)
            self.proc.kill()
            self.proc.wait(10)
        log.info("%s stopped code=%s", self.name, self.proc.returncode)

    def last_line(self, contains: str = "") -> str:
        """The newest non-empty line of the child's log that contains ``contains`` (what a
        child that exited said last, for the status view)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 16384))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return next((ln for ln in reversed(lines) if ln.strip() and contains in ln), "")

    def status(self) -> StageStatus:
        """The child's row: whether it runs and, for ingestion, its status file."""
        proc = self.proc
        if proc is None:
            return StageStatus(self.name, STARTING)
        if proc.poll() is not None:
            wait = max(0.0, self.restart_at - time.monotonic()) if self.restart_at else 0.0
            said = self.last_line()[-200:]
            return StageStatus(
                self.name, DOWN,
                last_error=f"exited with code {proc.returncode}, restarting in {wait:.0f} s"
                + (f"; it said: {said}" if said else "") + f" (log: {self.log_path})",
            )  # fmt: skip
        if self.status_file is None:
            return StageStatus(self.name, RUNNING)
        record = read_status(self.status_file)
        if record is None or record.get("pid") != proc.pid:
            return StageStatus(self.name, STARTING)
        return ingest_stage(self.name, record)


def _hit_55271(query: PipelineQuery) -> bool:
    from pipelines.job import hit_spark_55271

    return hit_spark_55271(query)


@dataclass
class StageRunner:
    """One streaming query, restarted from its checkpoint with backoff when it fails."""

    stage: str
    start_fn: Callable[[], PipelineQuery]
    query: PipelineQuery | None = None
    failures: int = 0
    restart_at: float = 0.0
    last_error: str = ""
    after_55271: bool = False

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
        if self.restart_at == 0.0 and q is not None and not self.after_55271 and _hit_55271(q):
            # Spark's bug on the first batch after a stop that interrupted one: not a failure
            q.gold.stop(final=False)
            log.warning("stage=%s hit SPARK-55271 on its first batch: restarting", self.stage)
            self.after_55271 = True  # a second one in a row counts as a failure
            self.restart_at = now
        elif self.restart_at == 0.0:
            self.after_55271 = False
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

    def status(self) -> StageStatus:
        """The query's row: its latest progress and the batch function's counters."""
        from pipelines.progress import kafka_lag, last_progress

        q = self.query
        if q is None or not q.isActive:
            if self.restart_at:
                wait = max(0.0, self.restart_at - time.monotonic())
                error = f"{self.last_error}; restarting in {wait:.0f} s"
                return StageStatus(self.stage, RESTARTING, last_error=error)
            return StageStatus(self.stage, FAILED if self.failures else STARTING)
        p = last_progress(q)
        stats = q.handler.stats
        p50, p99 = stats.recent.percentiles(0.50, 0.99)
        row = StageStatus(  # a batch served (stats) before its progress is reported
            self.stage, RUNNING if p or stats.batches else STARTING,
            last_batch=stats.last_batch_id if stats.batches else None,
            batch_ms=round(stats.duration_s * 1000) if stats.batches else None,
            p50_ms=p50, p99_ms=p99, rows_pg=stats.total_output,
            quarantined=stats.total_quarantined,
        )  # fmt: skip
        if p:
            row.last_batch = p.get("batchId")
            row.rows_per_s = p.get("processedRowsPerSecond")
            row.batch_ms = (p.get("durationMs") or {}).get("triggerExecution")
            row.lag_records = kafka_lag(p)
            arriving = p.get("inputRowsPerSecond") or 0.0
            if row.lag_records is not None:  # how long the records behind took to arrive
                row.lag_s = row.lag_records / arriving if arriving > 0 else 0.0
        row.counters = {
            "batch": "-" if row.last_batch is None else row.last_batch,
            "rows/s": f"{row.rows_per_s or 0.0:.0f}",
        }
        for key, value in (
            ("batch_ms", row.batch_ms), ("kafka_lag", row.lag_records),
            ("behind_s", None if row.lag_s is None else f"{row.lag_s:.1f}"),
            ("e2e_p50_ms", None if p50 is None else f"{p50:.0f}"),
            ("e2e_p99_ms", None if p99 is None else f"{p99:.0f}"),
        ):  # fmt: skip
            if value is not None:
                row.counters[key] = value
        row.counters.update(rows=stats.total_output, quarantined=stats.total_quarantined)
        # the other stream kinds' rows served (aggTrade=..., kline_1m=..., bookTicker=...)
        row.counters.update({k: n for k, n in stats.rows_by_kind.items() if k != "trade"})
        return row


@dataclass
class UpOptions:
    """What ``cryptoflow up`` runs."""

    source: str = "binance"
    pipeline: bool = True
    ingest: bool = True
    csv_paths: Sequence[Path] = ()
    speed: float | None = None
    simulator_args: list[str] = field(default_factory=list)
    status_every_s: float = 5.0  # between plain status lines (stdout not a terminal)
    live: bool | None = None  # the live table; None: when stdout is a terminal


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child: this one's, with every setting spelled out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOFLOW_")}
    env.update(settings.to_env())
    return env


def cryptoflow_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cryptoflow", *args]


def child_argv(*args: str) -> list[str]:
    """A child of ``up``: its stderr is its log file, so everything it logs goes there."""
    return cryptoflow_argv("--log-file", "-", *args)


def stop_on_signals(stop: threading.Event) -> SignalStop:
    """SIGINT, SIGTERM and SIGHUP set ``stop`` (``SignalStop``; ``install()`` again after
    something replaced the handlers, as a new SparkContext does SIGINT's); the loop then
    shuts down in order."""
    return SignalStop(stop).install()


def prepare(
    settings: Settings, progress: Callable[[str], None], started: list[str]
) -> Future[None]:
    """The steps of ``cryptoflow setup``: the quick checks here, then, in a thread, the
    embedded services (Kafka and PostgreSQL side by side), the schema and the topic, so the
    caller starts Spark meanwhile. ``started`` gets each embedded service this run starts
    (``up`` stops those again when it stops, whatever stops it)."""
    from cryptoflow.core import services
    from cryptoflow.provision import run_steps

    run_steps(settings, progress=progress, skip=("python dependencies", "services", "schema",
                                                 "kafka topic"))  # fmt: skip

    def bring_up() -> None:
        services.up(settings, progress, started)
        run_steps(settings, progress=progress, only=("schema", "kafka topic"))

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
    try:
        return pool.submit(bring_up)
    finally:
        pool.shutdown(wait=False)


def run_pipeline(
    settings: Settings,
    options: UpOptions,
    stop: threading.Event,
    progress: Callable[[str], None] = print,
) -> None:
    """Run until ``stop`` is set: children and stages supervised, a status line per stage.

    Whatever ends it (a signal, an error) stops everything in order: the simulator (so what
    it generated has reached ingestion), ingestion (which flushes to Kafka), the query
    between two batches, Spark's JVM, then the embedded services this run started. Embedded
    services that were running before are left running, and it says so."""
    settings = settings.replace(source=options.source)
    signals = stop_on_signals(stop)
    logs = settings.data_dir.resolve() / "logs"
    children: list[ChildProcess] = []
    if options.source == "sim" and options.ingest:
        children.append(
            ChildProcess(
                "simulator",
                child_argv("simulate", *options.simulator_args),
                child_env(settings),
                logs / "simulator.log",
            )  # fmt: skip
        )
    if options.ingest:
        args = ["ingest", "--source", options.source]
        args += [a for p in options.csv_paths for a in ("--csv", str(p))]
        if options.speed is not None:
            args += ["--speed", str(options.speed)]
        ingest = ChildProcess(
            "ingest", child_argv(*args), child_env(settings), logs / "ingest.log",
            status_file=ingest_status_path(settings),
        )  # fmt: skip
        children.append(ingest)
    runners: list[StageRunner] = []
    board = StatusBoard(options, children, runners, progress, logs).start()
    progress = board.progress
    spark: SparkSession | None = None
    validation: PeriodicValidation | None = None
    started_services: list[str] = []
    services_ready: Future[None] | None = None
    try:
        board.activity = "starting the services"
        services_ready = prepare(settings, progress, started_services)
        for child in children:
            if child.name == "simulator":
                child.start()  # it needs no service
        if options.pipeline and not stop.is_set():
            board.activity = "starting Spark (the JVM, Delta, the Kafka connector)"
            from cryptoflow.core.spark import get_spark  # seconds: not before the view is up

            spark = get_spark(settings, "cryptoflow-up")  # while the services start
            signals.install()  # the SparkContext just replaced the SIGINT handler
        board.activity = "starting the services"
        services_ready.result()
        for child in children:
            if child.name != "simulator" and not stop.is_set():
                child.start()  # it needs Kafka only
        board.activity = "starting the pipeline's query" if spark is not None else None
        if spark is not None and not stop.is_set():
            from cryptoflow.core.services.postgres import admin_dsn
            from expectations.schedule import PeriodicValidation
            from pipelines import job
            from pipelines.ops.retention import start_periodic
            from pipelines.progress import FailureLogger

            spark.streams.addListener(FailureLogger())
            validation = PeriodicValidation(spark, settings).start()
            start_periodic(admin_dsn(settings), settings.serving_retention_days)
            runner = StageRunner(job.QUERY, lambda: job.start(spark, settings))
            runner.start()
            runners.append(runner)
        board.activity = None
        names = [c.name for c in children] + [r.stage for r in runners]
        progress(f"up: running {', '.join(names)}; source={options.source}; Ctrl-C stops")
        while not stop.wait(0.5):
            for child in children:
                child.check()
            for runner in runners:
                runner.check()
    finally:
        # A terminal that hung up (SIGHUP) fails every write (EIO): the stop goes on anyway.
        say = _unfailing(progress)
        _best_effort("the status view", board.stop)
        say("up: stopping")
        _shutdown(settings, children, runners, validation, spark, say)
        _stop_services(settings, services_ready, started_services, say)
        say("up: stopped; run `cryptoflow up` again to resume from the checkpoints")


def _unfailing(progress: Callable[[str], None]) -> Callable[[str], None]:
    """``progress`` that drops a line it cannot write (a closed terminal or pipe)."""

    def say(line: str) -> None:
        with contextlib.suppress(OSError):  # EIO: a hung-up terminal; EPIPE: a closed pipe
            progress(line)

    return say


def _best_effort(what: str, step: Callable[[], object]) -> None:
    """Run one step of a shutdown; a failure is logged and the next steps still run."""
    try:
        step()
    except Exception as e:  # noqa: BLE001 - stopping anyway: what follows must stop too
        log.warning("stopping %s: %s", what, (str(e).splitlines() or [type(e).__name__])[0])


def _shutdown(
    settings: Settings,
    children: Sequence[ChildProcess],
    runners: Sequence[StageRunner],
    validation: PeriodicValidation | None,
    spark: SparkSession | None,
    progress: Callable[[str], None],
) -> None:
    """Stop the run's processes in order (see ``run_pipeline``)."""
    from cryptoflow.core.spark import stop_spark

    by_name = {c.name: c for c in children}
    for name in ("simulator", "ingest"):  # the exchange first, then what reads it flushes
        if name in by_name:
            _best_effort(name, by_name[name].stop)
    if validation is not None:
        _best_effort("validation", validation.stop)
    for runner in runners:
        _best_effort(runner.stage, runner.stop)
    for child in children:
        _best_effort(child.name, child.stop)
    if spark is not None:
        from pipelines.log_checkpoints import stop_checkpointer

        session = spark
        _best_effort("delta log checkpoints", lambda: stop_checkpointer(session))
        _best_effort("spark", lambda: stop_spark(session))


def _stop_services(
    settings: Settings,
    services_ready: Future[None] | None,
    started: list[str],
    progress: Callable[[str], None],
) -> None:
    """Stop the embedded services this run started (once their start is over, even a failed
    one); name those that were running before and stay running."""
    from cryptoflow.core import services

    if services_ready is not None:
        futures_wait([services_ready])
    if started:
        _best_effort("services", lambda: services.down(settings, progress, only=tuple(started)))
    kept = [name for name in services.embedded_running(settings) if name not in started]
    if kept:
        progress(
            f"up: {' and '.join(kept)} ran before `up` started and keep running; "
            "`cryptoflow services down` stops them"
        )


def status_lines(children: Sequence[ChildProcess], runners: Sequence[StageRunner]) -> list[str]:
    """The plain status lines of the run (``name: running key=value ...``)."""
    return plain_lines(Snapshot([c.status() for c in children] + [r.status() for r in runners]))


def ingest_stage(name: str, record: dict[str, Any]) -> StageStatus:
    """Ingestion's row from its status file (``ingestion.status.status_record``)."""
    states = {CONNECTING: CONNECTING, CONNECTED: CONNECTED, REPLAYING: REPLAYING,
              "disconnected": DISCONNECTED, STOPPED: STOPPED}  # fmt: skip
    state = states.get(str(record.get("state")), str(record.get("state")))
    down = state == DISCONNECTED
    lag_ms = record.get("lag_ms")
    row = StageStatus(
        name, state,
        since=record.get("since") if down else None,
        attempts=record.get("attempts") if down else None,
        last_error=str(record.get("last_error") or "") if down else "",
        problem=record.get("problem") if down else None,
        rows_per_s=record.get("frames_per_s"),
        lag_records=record.get("buffered"),
        lag_s=None if lag_ms is None else lag_ms / 1000,
        gaps_found=record.get("gaps_found"),
        gaps_filled=record.get("ids_filled"),
    )  # fmt: skip
    row.counters = {key: record.get(name, 0) for key, name in _INGEST_COUNTERS}
    row.counters["frames/s"] = f"{record.get('frames_per_s') or 0:.0f}"
    row.kinds = kind_frames(record)
    return row


#: The plain line's ``key=`` and the status file's field, in the order of ingestion's own
#: status line.
_INGEST_COUNTERS = (
    ("frames/s", "frames_per_s"), ("frames", "frames"), ("delivered", "delivered"),
    ("buffered", "buffered"), ("lag_ms", "lag_ms"), ("gaps", "gaps_found"),
    ("filled", "ids_filled"), ("unfillable", "ids_unfillable"), ("open", "gaps_open"),
    ("dups", "duplicates"), ("invalid", "invalid"), ("reconnects", "reconnects"),
)  # fmt: skip


#: The pipeline query's row before it runs: ``pipelines.job.QUERY``, not imported for it
#: (importing the pipeline takes seconds, and the view is up before).
PIPELINE_STAGE = "trades"


class StatusBoard:
    """The status view of ``up``: a thread builds a snapshot of every stage about once a
    second and hands it to the view (``cryptoflow.console``): a live table when stdout is a
    terminal, plain lines otherwise. ``progress`` prints a set-up step or event through the
    view; ``activity`` is what the spinner says ``up`` is doing (None: nothing special)."""

    def __init__(
        self,
        options: UpOptions,
        children: Sequence[ChildProcess],
        runners: Sequence[StageRunner],
        out: Callable[[str], None],
        log_dir: Path,
        view: StatusView | None = None,
    ) -> None:
        self.options, self.children, self.runners = options, children, runners
        self.view = view or make_view(out, options.status_every_s, options.live)
        self.footer = f"source={options.source} · Ctrl-C stops · logs in {log_dir}"
        self.activity: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="up-status", daemon=True)

    def progress(self, line: str) -> None:
        self.view.progress(line)

    def snapshot(self) -> Snapshot:
        stages = [c.status() for c in self.children] + [r.status() for r in self.runners]
        if self.options.pipeline and not self.runners:
            stages.append(StageStatus(PIPELINE_STAGE, STARTING))
        activity = self.activity
        if activity is None and any(
            s.state == STARTING and s.name in {r.stage for r in self.runners} for s in stages
        ):
            activity = "the query's first micro-batch (planning, reading Kafka)"
        return Snapshot(stages, activity=activity, source=self.options.source, footer=self.footer)

    def update(self) -> None:
        """One snapshot to the view (the thread does this every second)."""
        self.view.update(self.snapshot())

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.update()
            except Exception as e:  # noqa: BLE001 - a status view never stops the run
                log.debug("status view: %s", e, exc_info=True)

    def start(self) -> StatusBoard:
        self.view.start()
        self.update()
        self._thread.start()
        return self

    def stop(self) -> None:
        """No more snapshots (nothing calls into Spark from here after this returns); the
        last one stays on the terminal."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.view.stop()
