"""Issue 19 items 1-3 as a person meets them: `cryptoflow up` in a real terminal (tmux) and
through a pipe, on the session's Kafka and PostgreSQL.

* In a terminal, `up --source sim` redraws one status table that shows rows in PostgreSQL
  within 60 s, nothing from Spark, log4j, py4j or Great Expectations reaches the screen, and
  Ctrl-C ends it with exit code 0.
* With the exchange unreachable, `up --source binance` shows ingestion DISCONNECTED with
  the reason and the `--source sim` hint within 15 s, on a terminal and through a pipe,
  while Spark and the pipeline start beside it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptoflow.console.status import HINTS
from cryptoflow.core.config import Settings
from cryptoflow.supervisor import child_env
from ingestion.connection import UNREACHABLE
from tests.conftest import free_port

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "cryptoflow")
MARKER_VAR = "CF_TERMINAL_TEST_RUN"  # not CRYPTOFLOW_*: no setting
#: Text that only a library's log line would put on the screen.
THIRD_PARTY = ("log4j", "WARN", "NativeCodeLoader", "great_expectations", "py4j", "Traceback",
               "incubator", "SparkStringUtils", "ProcessingTimeExecutor")  # fmt: skip


def _processes_with(marker: str) -> list[int]:
    """Pids of the live processes whose environment holds ``marker`` (this run's)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
    return pids


def _end_run(marker: str, timeout: float = 90) -> None:
    """Whatever of the run is still alive gets SIGINT (a clean stop), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 10)):
        pids = _processes_with(marker)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.5)


def _env(settings: Settings, marker: str) -> dict[str, str]:
    env = child_env(settings)
    env[MARKER_VAR] = marker
    return env


def _run_settings(settings: Settings, workdir: Path, **changes: object) -> Settings:
    """The session's services, this run's own topic, lake and checkpoints."""
    return settings.replace(
        streams="trade",
        kafka_topic_prefix=f"terminal.{workdir.name}",
        lake_root=str(workdir / "lake"),
        checkpoint_root=str(workdir / "checkpoints"),
        sim_port=free_port(),
        **changes,
    )


class Terminal:
    """A command in a 200x50 tmux pane of a private tmux server; its exit code in a file."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.socket = str(workdir / "tmux.sock")  # a private server, gone with workdir
        self.rc = workdir / "rc"
        script = workdir / "run.sh"
        # the pane's own size and terminal type, not the test runner's (rich reads COLUMNS)
        env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "TERM", "TMUX")}
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
        script.write_text(  # tmux's server copied the runner's environment: COLUMNS too
            f"unset COLUMNS LINES\n{exports}cd {shlex.quote(str(workdir))}\n"
            f"{shlex.join(argv)}\necho $? > {shlex.quote(str(self.rc))}\nsleep 600\n"
        )
        self.started = time.monotonic()
        self._tmux("new-session", "-d", "-x", "200", "-y", "50", "-s", "up", f"bash {script}")
        self.seen: list[str] = []  # every screen captured

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", self.socket, *args], check=True, capture_output=True, text=True,
            timeout=30,
        ).stdout  # fmt: skip

    def screen(self) -> str:
        text = self._tmux("capture-pane", "-p", "-t", "up")
        self.seen.append(text)
        return text

    def history(self) -> str:
        """The whole pane, scrollback included."""
        return self._tmux("capture-pane", "-p", "-S", "-", "-t", "up")

    def wait_for(self, check, timeout: float, what: str) -> object:
        """Poll the screen until ``check(screen)`` is truthy, ``timeout`` s after the start."""
        deadline = self.started + timeout
        while True:
            screen = self.screen()
            found = check(screen)
            if found:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} {timeout:.0f} s after the start; the screen:\n{screen}")
            time.sleep(0.5)

    def ctrl_c_and_exit_code(self, timeout: float = 150) -> int:
        self._tmux("send-keys", "-t", "up", "C-c")
        deadline = time.monotonic() + timeout
        while not self.rc.exists() or not self.rc.read_text().strip():
            if time.monotonic() > deadline:
                pytest.fail(f"no exit {timeout:.0f} s after Ctrl-C; the screen:\n{self.screen()}")
            time.sleep(0.5)
        return int(self.rc.read_text())

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._tmux("kill-server")
        Path(self.socket).unlink(missing_ok=True)


@contextlib.contextmanager
def terminal(argv: list[str], env: dict[str, str], workdir: Path) -> Iterator[Terminal]:
    term = Terminal(argv, env, workdir)
    try:
        yield term
    finally:
        term.close()
        _end_run(env[MARKER_VAR])


def _cells(screen: str, stage: str) -> dict[str, str] | None:
    """``stage``'s row of the status table as {header: cell}, if the table is on screen."""
    lines = screen.splitlines()
    header = next((ln for ln in lines if "rows in PG" in ln and "│" in ln), None)
    row = next((ln for ln in lines if ln.strip().startswith(stage + " ") and "│" in ln), None)
    if header is None or row is None:
        return None
    names = [c.strip() for c in header.split("│")]
    cells = [c.strip() for c in row.split("│")]
    return dict(zip(names, cells, strict=False))


def _rows_in_pg(screen: str) -> int:
    cells = _cells(screen, "trades") or {}
    value = cells.get("rows in PG", "-").replace(",", "")
    return int(value) if value.isdigit() else 0


def _unwrapped(screen: str) -> str:
    """The screen's lines joined (the terminal wraps a long line at its width)."""
    return " ".join(line.strip() for line in screen.splitlines() if line.strip())


def _no_third_party(text: str) -> None:
    for sign in THIRD_PARTY:
        assert sign not in text, f"{sign!r} on the terminal:\n{text}"


def test_up_in_a_terminal_shows_a_live_table_with_data_and_no_library_log(
    settings: Settings, tmp_path: Path
):
    marker = uuid.uuid4().hex
    s = _run_settings(settings, tmp_path, source="sim")
    argv = [CLI, "up", "--source", "sim", "--sim-rate", "50", "--sim-seed", "7"]
    with terminal(argv, _env(s, marker), tmp_path) as term:
        term.wait_for(lambda scr: "starting Spark" in scr, 60, "spinner while Spark starts")
        term.wait_for(_rows_in_pg, 60, "status table with rows in PostgreSQL")
        screen = term.screen()
        table = _cells(screen, "trades")
        assert table is not None and table["state"] == "running", screen
        ingest = _cells(screen, "ingest")
        assert ingest is not None and ingest["state"] == "connected", screen
        assert _cells(screen, "simulator") is not None, screen
        # one table redrawn in place, not a table per refresh
        assert screen.count("rows in PG") == 1, screen
        code = term.ctrl_c_and_exit_code()
        history = term.history()
        for seen in [*term.seen, history]:
            _no_third_party(seen)
        assert code == 0, history
        assert "up: stopped" in history, history
    logs = settings.data_dir.resolve() / "logs"
    assert "NativeCodeLoader" in (logs / "spark.log").read_text()  # where Spark's lines went


def _unreachable_settings(settings: Settings, workdir: Path, ws_url: str, rest: str) -> Settings:
    return _run_settings(
        settings, workdir, source="binance", binance_ws_url=ws_url, binance_rest_url=rest,
        ws_backoff_initial_ms=200, ws_backoff_max_ms=2000,
    )  # fmt: skip


DISCONNECTED_WITH_REASON = "ingest: DISCONNECTED since "


def test_unreachable_exchange_shows_disconnected_reason_and_hint_in_a_terminal(
    settings: Settings, tmp_path: Path
):
    marker, port = uuid.uuid4().hex, free_port()  # nothing listens on the port
    s = _unreachable_settings(
        settings, tmp_path, f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    )
    argv = [CLI, "up", "--source", "binance"]
    with terminal(argv, _env(s, marker), tmp_path) as term:
        term.wait_for(
            lambda scr: DISCONNECTED_WITH_REASON in scr and HINTS[UNREACHABLE] in _unwrapped(scr),
            15, "DISCONNECTED state with its reason and the hint",
        )  # fmt: skip
        screen = term.screen()
        text = _unwrapped(screen)
        reason = text[text.index(DISCONNECTED_WITH_REASON) :]
        assert " attempts, last error: cannot connect: ConnectionRefusedError" in reason, screen
        assert "cryptoflow up --source sim" in text
        assert text.count(HINTS[UNREACHABLE]) == 1, screen  # once
        _no_third_party(screen)
        assert term.ctrl_c_and_exit_code() == 0, term.history()


def test_unreachable_exchange_shows_disconnected_reason_and_hint_through_a_pipe(
    settings: Settings, tmp_path: Path
):
    marker = uuid.uuid4().hex
    # a host name that cannot resolve (RFC 2606 .invalid): the DNS failure of a machine
    # without a route to Binance
    s = _unreachable_settings(
        settings, tmp_path, "wss://stream.binance.invalid:9443", "https://api.binance.invalid"
    )
    lines: list[str] = []
    started = time.monotonic()
    with (tmp_path / "stderr").open("wb") as err:
        proc = subprocess.Popen(
            [CLI, "up", "--source", "binance"], env=_env(s, marker),
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = started + 15
        while not (
            any(ln.startswith(DISCONNECTED_WITH_REASON) for ln in lines)
            and any(ln.strip() == HINTS[UNREACHABLE] for ln in lines)
        ):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("no DISCONNECTED line and hint on stdout 15 s after the start:\n"
                            + "".join(lines))  # fmt: skip
            time.sleep(0.25)
        line = next(ln for ln in lines if ln.startswith(DISCONNECTED_WITH_REASON))
        assert "last error: cannot connect: gaierror" in line, line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0, "".join(lines)
        reader.join(10)
        out = "".join(lines)
        assert out.count(HINTS[UNREACHABLE]) == 1, out  # once, though the lines repeat
        assert "\x1b[" not in out  # plain lines, no terminal control codes
        _no_third_party(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _end_run(marker)
