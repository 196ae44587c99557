"""Ingestion counters, the periodic status line and the status file ``cryptoflow up`` reads."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptoflow.core.config import Settings

log = logging.getLogger(__name__)

#: Connection states (``IngestStats.connection``).
CONNECTING, CONNECTED, DISCONNECTED, REPLAYING, STOPPED = (
    "connecting", "connected", "disconnected", "replaying", "stopped"
)  # fmt: skip


@dataclass
class KindStats:
    """Counters of one stream kind (``IngestStats.kinds``): frames received and continuity.

    ``gaps_found`` / ``ids_missing`` / ``ids_filled`` / ``ids_unfillable`` are gaps that REST
    fills (or cannot); ``gaps_counted`` / ``ids_skipped`` are gaps of kinds without a backfill
    endpoint, only counted. An id is a record id in the kind's own terms (trade id, aggregate
    id, kline open time step, update id)."""

    frames: int = 0
    invalid: int = 0
    duplicates: int = 0
    gaps_found: int = 0
    ids_missing: int = 0
    ids_filled: int = 0
    ids_unfillable: int = 0
    gaps_counted: int = 0
    ids_skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


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
    gaps_counted: int = 0  # gaps of kinds without backfill (book ticker update ids): counted
    # the primary (first registry) kind's last id per symbol: trade ids, as the status line
    # always showed them; every kind's are in ``last_ids``
    last_trade_id: dict[str, int] = field(default_factory=dict)
    last_ids: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> symbol -> id
    kinds: dict[str, KindStats] = field(default_factory=dict)  # per stream kind (name)
    started: float = field(default_factory=time.monotonic)
    # The exchange connection, for status views (set by ingestion/connection.py)
    connection: str = CONNECTING
    connection_since: float = field(default_factory=time.time)  # wall clock of the change
    connect_attempts: int = 0  # failed attempts since a connection last delivered frames
    last_error: str = ""  # why the last connection ended or could not be opened
    problem: str | None = None  # connection_problem() of that error: unreachable, restricted
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1, kind: str | None = None) -> None:
        """Add ``n`` to a counter (and to ``kind``'s counter of the same name, if given)."""
        with self.lock:
            setattr(self, name, getattr(self, name) + n)
            if kind is not None:
                counts = self.kind(kind)
                setattr(counts, name, getattr(counts, name) + n)

    def kind(self, name: str) -> KindStats:
        """The counters of stream kind ``name`` (created empty on first use)."""
        counts = self.kinds.get(name)
        if counts is None:
            counts = self.kinds[name] = KindStats()
        return counts


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
        kinds = " ".join(f"{k}={c.frames}" for k, c in s.kinds.items())
        return (
            f"frames/s={rate:.0f} frames={s.frames} delivered={s.delivered} buffered={buffered} "
            f"lag_ms={s.delivery_lag_ms:.0f} last_id[{ids}] gaps={s.gaps_found} "
            f"filled={s.ids_filled} unfillable={s.ids_unfillable} open={s.gaps_open} "
            f"dups={s.duplicates} invalid={s.invalid} reconnects={s.reconnects}"
            + (f" counted={s.gaps_counted} kinds[{kinds}]" if kinds else "")
        )


def ingest_status_path(settings: Settings) -> Path:
    """The status file of ingestion (named after its trade topic, ``settings.kafka_topic``:
    one per topic prefix, so runs on one data directory with different topics do not mix)."""
    return settings.data_dir.resolve() / "run" / f"ingest-{settings.kafka_topic}.json"


def status_record(stats: IngestStats, buffered: int, frames_per_s: float) -> dict[str, Any]:
    """What the status file holds: the connection's state and the counters."""
    s = stats
    return {
        "pid": os.getpid(),
        "updated": time.time(),
        "state": s.connection,
        "since": s.connection_since,
        "attempts": s.connect_attempts,
        "last_error": s.last_error,
        "problem": s.problem,
        "frames": s.frames,
        "frames_per_s": round(frames_per_s, 1),
        "delivered": s.delivered,
        "buffered": buffered,
        "lag_ms": round(s.delivery_lag_ms),
        "gaps_found": s.gaps_found,
        "ids_missing": s.ids_missing,
        "ids_filled": s.ids_filled,
        "ids_unfillable": s.ids_unfillable,
        "gaps_open": s.gaps_open,
        "duplicates": s.duplicates,
        "invalid": s.invalid,
        "reconnects": s.reconnects,
        "gaps_counted": s.gaps_counted,
        "kinds": {name: counts.as_dict() for name, counts in list(s.kinds.items())},
    }


def write_status(path: Path, record: dict[str, Any]) -> None:
    """Replace ``path`` with ``record`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record, separators=(",", ":")))
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The status file's record, or None when there is none (yet) or it is unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class StatusFile:
    """A thread that rewrites the status file every ``interval_s`` while ingestion runs, and
    once more (state ``stopped``) when it ends. Cheap: a few hundred bytes a second."""

    def __init__(
        self,
        path: Path,
        stats: IngestStats,
        buffered: Callable[[], int],
        interval_s: float = 1.0,
    ) -> None:
        self.path, self.stats, self.buffered, self.interval_s = path, stats, buffered, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-status", daemon=True)
        self._frames, self._at = stats.frames, time.monotonic()

    def start(self) -> StatusFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def write(self) -> None:
        now, frames = time.monotonic(), self.stats.frames
        rate = (frames - self._frames) / max(now - self._at, 1e-6)
        self._frames, self._at = frames, now
        try:
            write_status(self.path, status_record(self.stats, self.buffered(), rate))
        except OSError as e:  # a status view is not worth stopping ingestion for
            log.debug("status file %s: %s", self.path, e)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.stats.connection, self.stats.connection_since = STOPPED, time.time()
        self.write()
