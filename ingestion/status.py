"""Ingestion counters and the periodic status line."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class IngestStats:
    """Counters shared by the reader, the producer callbacks and the backfiller.

    Increments happen on the event-loop thread or inside ``Producer.poll`` callbacks; the lock
    guards the few read-modify-write updates made from other threads (backfill, status).
    """

    frames: int = 0  # frames received from the source (WebSocket / CSV), invalid ones included
    invalid: int = 0  # frames flagged cryptoflow.invalid
    duplicates: int = 0  # trades whose id was <= the last id seen for the symbol
    gaps_found: int = 0
    ids_missing: int = 0  # trade ids missing across all gaps found
    ids_filled: int = 0  # of those, published from REST (source=backfill)
    ids_unfillable: int = 0  # of those, REST could not serve (recorded in the gaps topic)
    gaps_open: int = 0  # gaps being filled right now
    reconnects: int = 0
    delivered: int = 0  # delivery reports without error
    delivery_errors: int = 0  # failed deliveries (each one is produced again)
    delivery_lag_ms: float = 0.0  # last delivery's produce -> ack latency
    backpressure_waits: int = 0  # times the reader waited for buffer space
    undelivered: int = 0  # frames still buffered when ingestion stopped (flush timed out)
    last_trade_id: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


class StatusLine:
    """Formats one status line from the counters, with the frame rate since the last line."""

    def __init__(self, stats: IngestStats) -> None:
        self.stats = stats
        self._last_frames = 0
        self._last_time = time.monotonic()

    def line(self, buffered: int = 0, whole_run: bool = False) -> str:
        """The status; ``frames/s`` since the previous line, or over the run if ``whole_run``."""
        s = self.stats
        now = time.monotonic()
        if whole_run:
            self._last_frames, self._last_time = 0, s.started
        rate = (s.frames - self._last_frames) / max(now - self._last_time, 1e-6)
        self._last_frames, self._last_time = s.frames, now
        ids = " ".join(f"{k}={v}" for k, v in sorted(s.last_trade_id.items())) or "-"
        return (
            f"frames/s={rate:.0f} frames={s.frames} delivered={s.delivered} buffered={buffered} "
            f"lag_ms={s.delivery_lag_ms:.0f} last_id[{ids}] gaps={s.gaps_found} "
            f"filled={s.ids_filled} unfillable={s.ids_unfillable} open={s.gaps_open} "
            f"dups={s.duplicates} invalid={s.invalid} reconnects={s.reconnects}"
        )
