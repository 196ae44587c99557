"""Copies from PostgreSQL into Delta that run beside the micro-batches, in rounds."""

from __future__ import annotations

import logging
import threading

from cryptoflow.core.errors import first_line

log = logging.getLogger(__name__)


class Rounds:
    """``sync()`` once, or every ``interval_s`` in a daemon thread (``start``) until ``stop``.
    A failed round is logged and retried by the next one: what it copies stays in PostgreSQL
    until a round succeeds."""

    thread_name = "copy"

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._lock = threading.Lock()  # one round at a time: the thread's or a caller's
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sync(self) -> object:
        """Copy what changed since the last round (subclasses)."""
        raise NotImplementedError

    def start(self) -> Rounds:
        """Run ``sync`` every ``interval_s`` in a daemon thread until ``stop``."""
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, final: bool = True) -> None:
        """End the thread; with ``final``, copy what is left (Delta caught up)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if final:
            self.sync()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sync()
            except Exception as e:  # noqa: BLE001 - the next round retries; PostgreSQL is safe
                log.warning("%s failed, retried next round: %s", self.thread_name, first_line(e))
