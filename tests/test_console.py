"""The terminal of ``cryptoflow up``, without services: the status table and plain lines from a
snapshot, which error gets which hint, ingestion's status file, the latency window, the log
routing (libraries to the file, the project to the terminal) and the one-line error of an
unexpected exception."""

from __future__ import annotations

import ast
import errno
import io
import logging
import os
import socket
import ssl
import sys
import time
import urllib.error
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from pyspark.errors import PySparkRuntimeError
from rich.console import Console
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from cryptoflow import cli
from cryptoflow.console.status import (
    COLUMNS,
    CONNECTED,
    DISCONNECTED,
    HINTS,
    RUNNING,
    Snapshot,
    StageStatus,
    describe,
    hint,
    plain_lines,
    render,
)
from cryptoflow.console.view import LiveView, PlainView, make_view
from cryptoflow.core.logs import setup_logging
from cryptoflow.supervisor import PIPELINE_STAGE, ingest_stage
from ingestion.connection import RESTRICTED, UNREACHABLE, connection_problem
from ingestion.status import (
    STOPPED,
    IngestStats,
    StatusFile,
    read_status,
    status_record,
)
from pipelines.latency import LatencyWindow

SINCE = time.mktime((2026, 1, 2, 12, 0, 1, 0, 0, -1))  # 12:00:01 local time
GAI = socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def _ingest_down(**kw: object) -> StageStatus:
    values: dict = dict(
        since=SINCE, attempts=5, last_error=f"cannot connect: gaierror: {GAI}",
        problem=UNREACHABLE, rows_per_s=0.0, lag_records=0, lag_s=0.0, gaps_found=0,
        gaps_filled=0,
    )  # fmt: skip
    values.update(kw)
    return StageStatus("ingest", DISCONNECTED, **values)


def _trades() -> StageStatus:
    return StageStatus(
        "trades", RUNNING, rows_per_s=1175.4, last_batch=42, batch_ms=1378, lag_records=1204,
        lag_s=0.6, p50_ms=715, p99_ms=1900, rows_pg=81_300, quarantined=7,
        counters={"batch": 42, "rows/s": "1175", "rows": 81300, "quarantined": 7},
    )  # fmt: skip


def _screen(snapshot: Snapshot, width: int = 200) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(render(snapshot))
    return out.getvalue()


def _cells(screen: str, stage: str) -> dict[str, str]:
    """The row of ``stage`` as {column header: cell} (columns are split by │)."""
    lines = screen.splitlines()
    header = next(ln for ln in lines if ln.strip().startswith("stage"))
    row = next(ln for ln in lines if ln.strip().startswith(stage + " "))
    names = [c.strip() for c in header.split("│")]
    return dict(zip(names, (c.strip() for c in row.split("│")), strict=True))


# ----- the table


def test_table_has_a_row_per_stage_with_its_numbers():
    sim = StageStatus("simulator", RUNNING)
    screen = _screen(Snapshot([sim, _ingest_down(), _trades()], footer="Ctrl-C stops"))
    header = next(ln for ln in screen.splitlines() if ln.strip().startswith("stage"))
    assert [c.strip() for c in header.split("│")] == list(COLUMNS)
    trades = _cells(screen, "trades")
    assert trades == {
        "stage": "trades", "state": "running", "rows/s": "1,175", "batch": "42",
        "batch time": "1.4 s", "lag": "1,204 rec / 0.6 s", "latency p50 / p99": "715 ms / 1.9 s",
        "rows in PG": "81,300", "quarantined": "7", "gaps found / filled": "-",
    }  # fmt: skip
    assert _cells(screen, "simulator")["rows/s"] == "-"
    ingest = _cells(screen, "ingest")
    assert ingest["state"] == "DISCONNECTED" and ingest["gaps found / filled"] == "0 / 0"
    assert "Ctrl-C stops" in screen


def test_a_stage_in_trouble_says_since_when_how_often_and_why():
    text = describe(_ingest_down())
    assert text == (
        "DISCONNECTED since 12:00:01, 5 attempts, last error: cannot connect: gaierror: "
        "[Errno -2] Name or service not known"
    )
    assert f"ingest: {text}" in _screen(Snapshot([_ingest_down()]), width=250)
    assert describe(StageStatus("trades", "failed")) == "failed"


def test_spinner_shows_what_up_is_doing_instead_of_the_footer():
    busy = _screen(Snapshot([_trades()], activity="starting Spark", footer="Ctrl-C stops"))
    assert "starting Spark" in busy and "Ctrl-C stops" not in busy
    assert "stage" not in _screen(Snapshot([], activity="starting the services"))  # no table


def test_the_pipeline_row_before_the_query_runs_has_the_query_name():
    # read, not imported: importing the pipeline (Spark, Great Expectations) takes seconds
    tree = ast.parse((Path(__file__).parents[1] / "pipelines" / "job.py").read_text())
    query = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        and any(isinstance(t, ast.Name) and t.id == "QUERY" for t in node.targets)
    )  # fmt: skip
    assert query == PIPELINE_STAGE


def test_plain_lines_keep_the_key_value_format():
    ingest = ingest_stage("ingest", {**status_record(IngestStats(), 2, 25.4), "state": CONNECTED})
    lines = plain_lines(Snapshot([StageStatus("simulator", RUNNING), ingest, _trades()]))
    assert lines[0] == "simulator: running"
    assert lines[1].startswith("ingest: running frames/s=25 frames=0 delivered=0 buffered=2 ")
    assert lines[1].endswith(" reconnects=0")
    assert lines[2] == "trades: running batch=42 rows/s=1175 rows=81300 quarantined=7"
    down = plain_lines(Snapshot([_ingest_down()]))[0]
    assert down.startswith("ingest: DISCONNECTED since 12:00:01, 5 attempts, last error: ")


def test_plain_view_says_trouble_at_once_each_hint_once_and_all_lines_every_interval():
    lines: list[str] = []
    now = [0.0]
    view = PlainView(lines.append, every_s=5, clock=lambda: now[0])
    healthy = Snapshot([StageStatus("ingest", CONNECTED)], source="binance")
    trouble = Snapshot([_ingest_down()], source="binance")
    view.update(healthy)
    assert lines == []  # nothing new, not time yet
    now[0] = 1
    view.update(trouble)
    assert lines[0].startswith("ingest: DISCONNECTED since") and lines[1] == HINTS[UNREACHABLE]
    now[0] = 2
    view.update(trouble)
    assert len(lines) == 2  # same state, hint already given
    now[0] = 5
    view.update(trouble)
    assert len(lines) == 3 and lines[2].startswith("ingest: DISCONNECTED")  # the interval's
    now[0] = 6
    view.update(healthy)
    assert lines[3] == "ingest: running"  # out of trouble: said at once


def test_the_live_view_is_for_terminals_that_redraw_and_not_under_verbose(
    monkeypatch: pytest.MonkeyPatch,
):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    monkeypatch.setenv("TERM", "xterm-256color")
    assert isinstance(make_view(print, 5), LiveView)
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(make_view(print, 5), PlainView)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr("cryptoflow.console.view.verbose", lambda: True)
    assert isinstance(make_view(print, 5), PlainView)  # -v: the log lines, not a table
    assert isinstance(make_view(print, 5, live=False), PlainView)  # --plain
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr("cryptoflow.console.view.verbose", lambda: False)
    assert isinstance(make_view(print, 5), PlainView)  # a pipe, a file, docker logs


# ----- hints


def _invalid_status(code: int) -> InvalidStatus:
    return InvalidStatus(Response(code, "", Headers(), b""))


def _http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("https://api.binance.com/x", code, "", Message(), None)


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (GAI, UNREACHABLE),  # DNS: no such host / no resolver
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"), UNREACHABLE),
        (TimeoutError("timed out during opening handshake"), UNREACHABLE),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), UNREACHABLE),
        (OSError(errno.EHOSTUNREACH, "No route to host"), UNREACHABLE),
        (
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 9443, 0, 0), "
                "[Errno 111] Connect call failed ('127.0.0.1', 9443)"
            ),
            UNREACHABLE,
        ),  # fmt: skip
        (urllib.error.URLError(GAI), UNREACHABLE),  # REST
        (_invalid_status(451), RESTRICTED),  # restricted location, WebSocket handshake
        (_invalid_status(403), RESTRICTED),
        (_http_error(451), RESTRICTED),  # restricted location, REST
        (_http_error(403), RESTRICTED),
        (_invalid_status(500), None),
        (_http_error(429), None),
        (ssl.SSLCertVerificationError("certificate verify failed"), None),
        (ValueError("something else"), None),
        (None, None),
    ],
)
def test_connection_problem_classifies_what_cannot_reach_binance(error, problem):
    assert connection_problem(error) == problem


def test_connection_problem_follows_the_cause():
    try:
        try:
            raise _invalid_status(451)
        except InvalidStatus as e:
            raise RuntimeError("handshake failed") from e
    except RuntimeError as outer:
        assert connection_problem(outer) == RESTRICTED


def test_each_problem_of_live_binance_gets_its_hint_and_nothing_else_does():
    unreachable = hint(_ingest_down(), "binance")
    assert unreachable is not None and "cryptoflow up --source sim" in unreachable
    restricted = hint(_ingest_down(problem=RESTRICTED), "binance")
    assert restricted is not None and "CRYPTOFLOW_BINANCE_ENDPOINT=us" in restricted
    assert "vision" in restricted
    assert hint(_ingest_down(problem=None), "binance") is None  # e.g. a TLS error: the row says
    assert hint(_ingest_down(), "sim") is None  # the simulator is this machine's own
    assert hint(StageStatus("ingest", CONNECTED, problem=UNREACHABLE), "binance") is None


# ----- ingestion's status file, the latency window


def test_status_file_holds_the_connection_state_and_ends_stopped(tmp_path: Path):
    stats = IngestStats()
    stats.connection, stats.connect_attempts, stats.problem = DISCONNECTED, 3, UNREACHABLE
    stats.last_error, stats.frames, stats.gaps_found, stats.ids_filled = "refused", 10, 2, 7
    path = tmp_path / "run" / "ingest-t.json"
    status = StatusFile(path, stats, lambda: 4, interval_s=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while read_status(path) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        record = read_status(path)
        assert record is not None
        assert (record["state"], record["attempts"], record["problem"]) == (
            DISCONNECTED, 3, UNREACHABLE)  # fmt: skip
        assert (record["buffered"], record["gaps_found"], record["ids_filled"]) == (4, 2, 7)
        row = ingest_stage("ingest", record)
        assert row.state == "DISCONNECTED" and row.last_error == "refused" and row.attempts == 3
    finally:
        status.stop()
    final = read_status(path)
    assert final is not None and final["state"] == STOPPED
    assert read_status(tmp_path / "missing.json") is None
    (tmp_path / "torn.json").write_text('{"state": "conn')
    assert read_status(tmp_path / "torn.json") is None


def test_latency_window_gives_percentiles_of_the_last_minute():
    now = [0.0]
    window = LatencyWindow(seconds=60, per_batch=100, clock=lambda: now[0])
    assert window.percentiles(0.5, 0.99) == (None, None)
    window.add([100.0] * 10)
    now[0] = 30
    window.add(list(range(1, 1001)))  # sampled to 100 values, each weighing 10
    p50, p99 = window.percentiles(0.5, 0.99)
    assert p50 is not None and p99 is not None
    assert 480 <= p50 <= 520 and 975 <= p99 <= 1000
    now[0] = 61  # the first batch is out of the window
    window.add([5000.0])
    assert window.percentiles(1.0) == (5000.0,)
    now[0] = 200
    assert window.percentiles(0.5) == (None,)


# ----- logging and the error line


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo ``setup_logging``: its handlers go, pytest's session-wide ones come back (its
    per-phase capture handlers are pytest's to add and remove)."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for h in [h for h in root.handlers if h not in before]:
        root.removeHandler(h)
        h.close()
    for h in before:
        if h not in root.handlers and type(h).__name__ != "LogCaptureHandler":
            root.addHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_libraries_log_to_the_file_and_the_project_to_the_terminal_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
):
    log_file = tmp_path / "logs" / "cryptoflow.log"
    setup_logging("INFO", log_file=log_file)
    logging.getLogger("great_expectations._docs_decorators").info("Skipping registering x")
    logging.getLogger("py4j.clientserver").warning("py4j says")
    logging.getLogger("cryptoflow.up").info("ours")
    err = capsys.readouterr().err
    assert "ours" in err and "Skipping" not in err and "py4j" not in err
    text = log_file.read_text()
    assert "Skipping registering x" in text and "py4j says" in text and "ours" in text

    setup_logging("INFO", verbose=True, log_file=log_file)  # -v: everything on the terminal
    logging.getLogger("great_expectations._docs_decorators").info("Skipping again")
    assert "Skipping again" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_with_the_log_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
):
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("CRYPTOFLOW_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CRYPTOFLOW_DATA_DIR", str(tmp_path / "data"))
    parser = cli.build_parser()
    parse = parser.parse_known_args
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    log_file = (tmp_path / "data" / "logs" / "cryptoflow.log").resolve()

    def fail_with(error: Exception) -> str:
        """`cryptoflow config` whose handler raises ``error``: its exit code 1 and stderr."""

        def handler(settings: object, args: object) -> int:
            raise error

        def parse_and_break(argv: list[str] | None = None):
            args, extra = parse(argv)
            args.handler = handler
            return args, extra

        monkeypatch.setattr(parser, "parse_known_args", parse_and_break)
        assert cli.main(["config"]) == 1
        return capsys.readouterr().err

    err = fail_with(ConnectionResetError(104, "Connection reset by peer"))
    assert err == (
        "cryptoflow: error: `cryptoflow config` failed: ConnectionResetError: [Errno 104] "
        f"Connection reset by peer (details in {log_file})\n"
    )
    assert "Traceback" in log_file.read_text() and "in handler" in log_file.read_text()

    err = fail_with(PySparkRuntimeError(errorClass="JAVA_GATEWAY_EXITED", messageParameters={}))
    assert "PySparkRuntimeError: [JAVA_GATEWAY_EXITED] Java gateway process exited" in err
    spark_log = log_file.with_name("spark.log")  # the JVM's own words are there
    assert err.endswith(f"(details in {log_file}; the Spark JVM's in {spark_log})\n")
