"""Where status snapshots go: a live table on a terminal, plain lines anywhere else.

Both views take the same calls: ``start()``, ``progress(line)`` for a set-up step or an
event (printed once, above the table on a terminal), ``update(snapshot)`` about once a
second, and ``stop()``. Each hint of a snapshot is printed once."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Protocol

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner

from cryptoflow.console.status import (
    HEALTHY,
    TROUBLE,
    Snapshot,
    hints,
    plain_line,
    plain_lines,
    render,
)
from cryptoflow.core.logs import log_file, terminal_handler, verbose


class StatusView(Protocol):
    def start(self) -> None: ...
    def progress(self, line: str) -> None: ...
    def update(self, snapshot: Snapshot) -> None: ...
    def stop(self) -> None: ...


class PlainView:
    """Lines through ``out``: every stage's line every ``every_s`` seconds, a stage's line at
    once when it runs into trouble or out of it, and each hint once (CI, files, ``docker
    logs``: nothing is redrawn)."""

    def __init__(
        self,
        out: Callable[[str], None],
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out, self.every_s, self.clock = out, every_s, clock
        self._states: dict[str, str] = {}
        self._hinted: set[str] = set()
        self._next = clock() + every_s

    def start(self) -> None:
        pass

    def progress(self, line: str) -> None:
        self.out(line)

    def update(self, snapshot: Snapshot) -> None:
        for stage in snapshot.stages:
            before = self._states.get(stage.name)
            self._states[stage.name] = stage.state
            into_trouble = stage.state in TROUBLE and before != stage.state
            out_of_trouble = before in TROUBLE and stage.state in HEALTHY
            if into_trouble or out_of_trouble:
                self.out(plain_line(stage))
        _print_hints(snapshot, self._hinted, self.out)
        now = self.clock()
        if now >= self._next and snapshot.stages:
            self._next = now + self.every_s
            for line in plain_lines(snapshot):
                self.out(line)

    def stop(self) -> None:
        pass


class LiveView:
    """One table redrawn in place (rich's ``Live``), with a spinner while ``up`` is busy.

    Lines printed meanwhile (set-up steps, hints, the project's warnings) scroll above it.
    While it runs, the terminal gets the project's warnings and errors only: the INFO lines
    (one per micro-batch) go to the log file."""

    def __init__(self, console: Console | None = None, refresh_per_second: float = 4) -> None:
        self.console = console or Console()
        self._snapshot = Snapshot([])
        self._spinner = Spinner("dots")
        self._hinted: set[str] = set()
        self._live = Live(
            console=self.console,
            refresh_per_second=refresh_per_second,
            get_renderable=self._render,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._handler: logging.StreamHandler[IO[str]] | None = None
        self._saved: tuple[IO[str], int] | None = None  # the handler's stream and level

    def _render(self) -> RenderableType:
        return render(self._snapshot, self._spinner)

    def start(self) -> None:
        self._live.start()
        handler = terminal_handler()
        if isinstance(handler, logging.StreamHandler):
            # log lines go through Live's stderr proxy, so they print above the table
            self._handler = handler
            self._saved = (handler.stream, handler.level)
            handler.setStream(sys.stderr)
            if log_file() is not None and not verbose():
                handler.setLevel(logging.WARNING)

    def progress(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def update(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        _print_hints(snapshot, self._hinted, self.progress)

    def stop(self) -> None:
        """Stop redrawing (the last table stays). The terminal keeps getting only warnings
        and errors: what follows is the run's shutdown, told by its progress lines."""
        self._live.stop()
        if self._handler is not None and self._saved is not None:
            self._handler.setStream(self._saved[0])
            self._handler = self._saved = None


def _print_hints(snapshot: Snapshot, printed: set[str], out: Callable[[str], None]) -> None:
    for text in hints(snapshot):
        if text not in printed:
            printed.add(text)
            out(text)


def make_view(out: Callable[[str], None], every_s: float, live: bool | None = None) -> StatusView:
    """A ``LiveView`` when ``live``, else a ``PlainView`` on ``out``. ``live=None``: live when
    stdout is a terminal that can redraw, unless ``-v`` asked for every log line (which would
    scroll the table away)."""
    if live is None:
        live = sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and not verbose()
    return LiveView() if live else PlainView(out, every_s)
