"""Issue 19 items 4 and 5: SIGTERM and SIGHUP stop `cryptoflow up` and `cryptoflow run` as
Ctrl-C does, and `up` stops the embedded services it started.

Each command is started in a session of its own and the signal goes to its whole process
group, as `kill -TERM -PGID`, `timeout`, `docker stop` or a closing terminal send it. Every
process of a run (the supervisor, the simulator, ingestion, the Spark JVM and its Python
workers, and the Kafka broker and PostgreSQL that `up` started) inherits a marker in its
environment; after the command exits, no process carries it any more.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from cryptoflow.core import services
from cryptoflow.core.config import Settings
from cryptoflow.supervisor import child_env
from ingestion.simulator import read_record
from tests.conftest import free_port, make_data_dir, make_settings, wait_until
from tests.pipeline_helpers import expected, isolated, pg_rows, pg_trades, produce_trades, trades

pytestmark = pytest.mark.integration

MARKER_VAR = "CF_STOP_TEST_RUN"  # not CRYPTOFLOW_*: no setting
TRACEBACK_SIGNS = ("Traceback (most recent call last)", "Exception in thread", "Py4JError",
                   "py4j.protocol", "ERROR")  # fmt: skip


def processes_with(marker: str) -> list[str]:
    """``pid command`` of every live process whose environment holds ``marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if state != "Z":
            found.append(f"{entry.name} {cmd[:160]}")
    return found


def launch(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """The command in a new session: its pid is its process group's id."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def signal_group_and_wait(proc: subprocess.Popen, sig: int, timeout: float = 150) -> int:
    os.killpg(proc.pid, sig)
    return proc.wait(timeout)


def assert_clean_exit(code: int, log: Path, marker: str, since: int = 0) -> str:
    """Exit 0, no traceback or error in the output from byte ``since``, no process left."""
    text = log.read_bytes()[since:].decode(errors="replace")
    assert code == 0, text[-4000:]
    for sign in TRACEBACK_SIGNS:
        assert sign not in text, f"{sign!r} in the output:\n{text[-4000:]}"
    wait_until(lambda: not processes_with(marker), 20, 0.5, "every process of the run to end")
    return text


def kill_leftovers(proc: subprocess.Popen | None, marker: str) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    for line in processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def raw_trade_count(s: Settings) -> int:
    try:
        return pg_rows(s, "SELECT count(*) FROM raw_trades")[0][0]
    except Exception:  # noqa: BLE001 - PostgreSQL or the schema not up yet
        return 0


@pytest.mark.timeout(900)
def test_sigterm_to_up_group_stops_cleanly_and_a_rerun_is_exact(tmp_path):
    """`cryptoflow up --source sim` on services it starts itself: SIGTERM to its process
    group while batches flow and the simulator trades, exit 0 without a traceback and no
    process left (the services it started included); a rerun (stopped by SIGHUP the same
    way) then serves raw_trades equal to the simulator's record of both runs."""
    data_dir = make_data_dir()
    s = make_settings(data_dir, source="sim", max_offsets_per_trigger=150, streams="trade")
    marker = uuid.uuid4().hex
    env = {**child_env(s), MARKER_VAR: marker}
    record = tmp_path / "record.jsonl"
    log = tmp_path / "up.log"
    up = [sys.executable, "-m", "cryptoflow", "up", "--source", "sim", "--sim-seed", "7",
          "--sim-record", str(record), "--sim-wait-for-client", "--status-every", "2"]  # fmt: skip
    proc = None
    try:
        # First run: the simulator trades until the stop; small batches keep the query busy.
        proc = launch([*up, "--sim-rate", "120"], env, log)
        first = wait_until(lambda: proc.poll() is not None or raw_trade_count(s), 240, 0.5,
                           f"the first rows in raw_trades (log: {log})")  # fmt: skip
        assert proc.poll() is None, log.read_text()[-4000:]
        wait_until(lambda: proc.poll() is not None or raw_trade_count(s) > first, 120, 0.2,
                   "the next batch")  # fmt: skip
        code = signal_group_and_wait(proc, signal.SIGTERM)
        text = assert_clean_exit(code, log, marker)
        assert "up: stopped" in text
        assert "postgres: stopped" in text and "kafka: stopped" in text  # it started them
        generated = len(read_record(record))
        assert generated > 0

        # The rerun resumes: 100 more trades per symbol, then everything is in raw_trades.
        since = log.stat().st_size
        proc = launch([*up, "--sim-rate", "150", "--sim-max-trades", "100"], env, log)

        def complete() -> bool:
            assert proc.poll() is None, log.read_text()[-4000:]
            trades_ = read_record(record)
            per_symbol = Counter(t["s"] for t in trades_[generated:])
            done = all(per_symbol[sym] >= 100 for sym in s.symbols)
            return done and pg_trades(s, s.symbols) == expected(trades_)

        wait_until(complete, 300, 1.0, f"raw_trades equal to the record (log: {log})")
        code = signal_group_and_wait(proc, signal.SIGHUP)
        assert_clean_exit(code, log, marker, since)
    finally:
        kill_leftovers(proc, marker)
        services.down(s, progress=lambda _: None)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.timeout(600)
def test_sighup_to_run_group_stops_cleanly(settings, unique, tmp_path):
    """`cryptoflow run` on the session's services: SIGHUP to its process group once its
    batches serve trades; exit 0, no traceback, and its JVM is gone."""
    s = isolated(settings, unique, tmp_path).replace(max_offsets_per_trigger=20)
    payloads = trades(200, s.symbols)
    produce_trades(s, payloads)
    marker = uuid.uuid4().hex
    log = tmp_path / "run.log"
    proc = launch([sys.executable, "-m", "cryptoflow", "run"],
                  {**child_env(s), MARKER_VAR: marker}, log)  # fmt: skip
    try:
        wait_until(lambda: proc.poll() is not None or pg_trades(s, s.symbols), 300, 0.5,
                   f"the first trades in raw_trades (log: {log})")  # fmt: skip
        assert proc.poll() is None, log.read_text()[-4000:]
        assert any("java" in p for p in processes_with(marker))  # the JVM carries the marker
        code = signal_group_and_wait(proc, signal.SIGHUP)
        assert_clean_exit(code, log, marker)
        got = pg_trades(s, s.symbols)
        assert len(got) > 0 and got.items() <= expected(payloads).items()
    finally:
        kill_leftovers(proc, marker)


@pytest.mark.timeout(300)
def test_sigterm_while_up_starts_its_services_stops_cleanly(tmp_path):
    """SIGTERM to the group while `up` formats Kafka's storage and runs initdb: those
    helpers are not the signal's target, so the services come up, and `up` stops them
    again and exits 0 (it used to fail with 'formatting Kafka storage failed')."""
    data_dir = make_data_dir()
    s = make_settings(data_dir, source="sim", streams="trade")
    marker = uuid.uuid4().hex
    log = tmp_path / "up.log"
    proc = launch([sys.executable, "-m", "cryptoflow", "up", "--source", "sim"],
                  {**child_env(s), MARKER_VAR: marker}, log)  # fmt: skip
    try:
        wait_until(lambda: proc.poll() is not None or "simulator started" in log.read_text(),
                   120, 0.05, "the services' start")  # fmt: skip
        code = signal_group_and_wait(proc, signal.SIGTERM)
        text = assert_clean_exit(code, log, marker)
        assert "up: stopped" in text
        assert not services.embedded_running(s)
    finally:
        kill_leftovers(proc, marker)
        services.down(s, progress=lambda _: None)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.timeout(300)
def test_terminal_hang_up_stops_up_cleanly(settings, unique, tmp_path):
    """`cryptoflow up` in an interactive shell in a terminal (tmux) that closes: the shell
    passes SIGHUP on to its job, the live view's writes fail (EIO), and `up` still stops
    everything and exits 0. Both broke it: a write in the shutdown raised, and setting the
    stop event from the signal handler could deadlock with the main loop's wait."""
    s = isolated(settings, unique, tmp_path).replace(source="sim", sim_port=free_port())
    marker = uuid.uuid4().hex
    env = {k: v for k, v in child_env(s).items() if k not in ("COLUMNS", "LINES", "TMUX")}
    env[MARKER_VAR] = marker
    rc = tmp_path / "rc"
    script = tmp_path / "run.sh"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    argv = [sys.executable, "-m", "cryptoflow", "up", "--source", "sim", "--sim-rate", "50"]
    script.write_text(  # the script's own shell ignores the hang-up; cryptoflow handles it
        f"trap '' HUP\n{exports}cd {shlex.quote(str(tmp_path))}\n{shlex.join(argv)}\n"
        f"echo $? > {shlex.quote(str(rc))}\n"
    )
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    subprocess.run([*tmux, "new-session", "-d", "-x", "160", "-y", "40", "bash --norc -i"],
                   check=True, timeout=30)  # fmt: skip
    try:
        subprocess.run([*tmux, "send-keys", f"bash {shlex.quote(str(script))}", "Enter"],
                       check=True, timeout=30)  # fmt: skip
        wait_until(lambda: pg_trades(s, s.symbols), 240, 0.5, "rows of the run in raw_trades")
        subprocess.run([*tmux, "kill-server"], check=True, timeout=30)  # the terminal closes
        wait_until(lambda: rc.exists() and rc.read_text().strip(), 120, 0.5, "up's exit")
        assert rc.read_text().strip() == "0"
        wait_until(lambda: not processes_with(marker), 20, 0.5, "every process of the run to end")
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)
        kill_leftovers(None, marker)
