"""The signals that stop a command as Ctrl-C does, and a safe way to turn them into an event."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

#: What stops ``up``, ``run`` and ``ingest`` as Ctrl-C does: the terminal's interrupt, the
#: polite stop of ``kill``, ``timeout``, ``docker stop`` and systemd, and a terminal that
#: closes.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SignalStop:
    """``STOP_SIGNALS`` set ``stop``.

    The handler only writes a byte to a pipe, and a thread reading it sets ``stop``. Setting
    the event in the handler can deadlock: Python runs handlers in the main thread between
    two bytecodes, possibly while that thread holds the event's own lock inside
    ``stop.wait``, which ``set`` then waits for forever (seen on a terminal's hang-up)."""

    def __init__(self, stop: threading.Event) -> None:
        read_end, self._write_end = os.pipe()
        os.set_blocking(self._write_end, False)
        watcher = threading.Thread(
            target=self._watch, args=(read_end, stop), name="stop-signals", daemon=True
        )
        watcher.start()

    def install(self) -> SignalStop:
        """(Re)install the handlers (again after something replaced them, as a new
        SparkContext does SIGINT's); from the main thread only (elsewhere: nothing)."""
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):  # the pipe is full: a stop is on its way anyway
            os.write(self._write_end, bytes([signum]))

    @staticmethod
    def _watch(read_end: int, stop: threading.Event) -> None:
        while os.read(read_end, 64):
            stop.set()
