"""A status snapshot of ``cryptoflow up`` and the plain functions that present it: a rich
table for a terminal, ``name: state key=value ...`` lines otherwise, and the hints that say
what to do about a stage's problem. Pure: no I/O, no clock but the one passed in."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from ingestion.connection import RESTRICTED, UNREACHABLE

# Stage states. A healthy stage's plain line says "running", as before the live view.
STARTING, RUNNING, STOPPED = "starting", "running", "stopped"
CONNECTING, CONNECTED, REPLAYING = "connecting", "connected", "replaying"
DISCONNECTED, DOWN, FAILED, RESTARTING = "DISCONNECTED", "down", "failed", "restarting"
HEALTHY = (RUNNING, CONNECTED, REPLAYING)
TROUBLE = (DISCONNECTED, DOWN, FAILED, RESTARTING)

#: What to do about a connection problem (``ingestion.connection.connection_problem``) of
#: live Binance. Shown once; ingestion never switches source by itself.
HINTS = {
    UNREACHABLE: (
        "hint: there is no route to Binance from here; `cryptoflow up --source sim` runs "
        "the built-in simulator, which speaks Binance's protocol"
    ),
    RESTRICTED: (
        "hint: Binance refuses connections from this location (HTTP 451/403); set "
        "CRYPTOFLOW_BINANCE_ENDPOINT=us (Binance.US) or vision (data-stream.binance.vision, "
        "market data only) and run `cryptoflow up` again"
    ),
}


@dataclass
class StageStatus:
    """One row of the status view. ``None`` is "not known / does not apply" (shown as -)."""

    name: str
    state: str
    since: float | None = None  # wall clock the state began (DISCONNECTED since HH:MM:SS)
    attempts: int | None = None  # failed connection attempts in a row
    last_error: str = ""
    problem: str | None = None  # ingestion.connection.connection_problem kind
    rows_per_s: float | None = None
    last_batch: int | None = None
    batch_ms: float | None = None
    lag_records: int | None = None  # Kafka records behind (ingest: frames not in Kafka yet)
    lag_s: float | None = None  # seconds behind (ingest: the delivery latency)
    p50_ms: float | None = None  # end-to-end latency of the last minute
    p99_ms: float | None = None
    rows_pg: int | None = None  # rows this run served to PostgreSQL (raw_trades)
    quarantined: int | None = None
    gaps_found: int | None = None
    gaps_filled: int | None = None  # trade ids filled from REST
    counters: dict[str, object] = field(default_factory=dict)  # key=value of the plain line
    kinds: dict[str, int] = field(default_factory=dict)  # ingest: frames per stream kind


@dataclass
class Snapshot:
    """Every stage at one moment, and what ``up`` is doing (a spinner while it is not None)."""

    stages: list[StageStatus]
    activity: str | None = None
    source: str = "binance"
    footer: str = ""


def clock(ts: float) -> str:
    """``HH:MM:SS`` local time."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def describe(stage: StageStatus) -> str:
    """``DISCONNECTED since 12:00:01, 5 attempts, last error: <reason>``."""
    text = stage.state
    if stage.since is not None:
        text += f" since {clock(stage.since)}"
    if stage.attempts:
        text += f", {stage.attempts} attempt{'s' if stage.attempts != 1 else ''}"
    if stage.last_error:
        text += f", last error: {stage.last_error}"
    return text


def hint(stage: StageStatus, source: str) -> str | None:
    """The hint for ``stage``'s problem: only live Binance has one (a simulator that cannot
    be reached is this machine's own problem, its row says so)."""
    if source != "binance" or stage.state != DISCONNECTED or stage.problem is None:
        return None
    return HINTS.get(stage.problem)


def hints(snapshot: Snapshot) -> list[str]:
    found = (hint(stage, snapshot.source) for stage in snapshot.stages)
    return [h for h in found if h]


def kind_frames(record: dict) -> dict[str, int]:
    """Frames per stream kind from ingestion's status file (``status_record``'s ``kinds``)."""
    kinds = record.get("kinds")
    if not isinstance(kinds, dict):
        return {}
    return {name: int(c.get("frames", 0)) for name, c in kinds.items() if isinstance(c, dict)}


def _kinds(stage: StageStatus) -> str:
    return " ".join(f"{k}={v}" for k, v in stage.kinds.items())


def plain_line(stage: StageStatus) -> str:
    """``ingest: running frames/s=25 ... kinds[trade=900 aggTrade=600]``, ``ingest:
    DISCONNECTED since ... last error: ...``."""
    head = RUNNING if stage.state in HEALTHY else describe(stage)
    rest = " ".join(f"{k}={v}" for k, v in stage.counters.items())
    if stage.kinds:
        rest += f" kinds[{_kinds(stage)}]"
    return f"{stage.name}: {head} {rest}".rstrip()


def plain_lines(snapshot: Snapshot) -> list[str]:
    return [plain_line(stage) for stage in snapshot.stages]


# ----- the table


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}"


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s"


def _lag(stage: StageStatus) -> str:
    if stage.lag_records is None and stage.lag_s is None:
        return "-"
    records = "-" if stage.lag_records is None else f"{stage.lag_records:,} rec"
    seconds = "-" if stage.lag_s is None else f"{stage.lag_s:.1f} s"
    return f"{records} / {seconds}"


def _pair(a: str, b: str) -> str:
    return "-" if a == b == "-" else f"{a} / {b}"


def _state(stage: StageStatus) -> Text:
    if stage.state in HEALTHY:
        return Text(stage.state, style="green")
    return Text(stage.state, style="bold red" if stage.state in TROUBLE else "yellow")


#: Column headers, in order (tests find a cell by its header).
COLUMNS = (
    "stage", "state", "rows/s", "batch", "batch time", "lag", "latency p50 / p99",
    "rows in PG", "quarantined", "gaps found / filled",
)  # fmt: skip


def row(stage: StageStatus) -> list[str | Text]:
    """The cells of ``stage``'s row, in ``COLUMNS`` order."""
    return [
        stage.name,
        _state(stage),
        _num(stage.rows_per_s),
        _num(stage.last_batch),
        _duration(stage.batch_ms),
        _lag(stage),
        _pair(_duration(stage.p50_ms), _duration(stage.p99_ms)),
        _num(stage.rows_pg),
        _num(stage.quarantined),
        _pair(_num(stage.gaps_found), _num(stage.gaps_filled)),
    ]


def status_table(stages: Sequence[StageStatus]) -> Table:
    """One compact table, a row per stage."""
    table = Table(box=box.MINIMAL, header_style="bold", pad_edge=False)
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
    for stage in stages:
        table.add_row(*row(stage))
    return table


def render(snapshot: Snapshot, spinner: Spinner | None = None) -> RenderableType:
    """The whole view: the table, a line per stage in trouble (what and why), then the
    spinner with what ``up`` is doing, or the footer."""
    parts: list[RenderableType] = [status_table(snapshot.stages)] if snapshot.stages else []
    for stage in snapshot.stages:
        if stage.kinds:
            parts.append(Text(f"{stage.name} frames by kind: {_kinds(stage)}", style="dim"))
    for stage in snapshot.stages:
        if stage.state in TROUBLE:
            parts.append(Text(f"{stage.name}: {describe(stage)}", style="red"))
    if snapshot.activity:
        if spinner is None:
            spinner = Spinner("dots")
        spinner.update(text=Text(snapshot.activity))
        parts.append(spinner)
    elif snapshot.footer:
        parts.append(Text(snapshot.footer, style="dim"))
    return Group(*parts)
