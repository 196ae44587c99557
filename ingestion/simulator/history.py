"""Every generated trade of a symbol, kept for REST (``historicalTrades`` is how clients fill
gaps), bounded by a retention count."""

from __future__ import annotations

import bisect
from typing import Generic, TypeVar

from ingestion.simulator.frames import AggTrade, Trade

Row = TypeVar("Row", Trade, AggTrade)


class History(Generic[Row]):
    """Rows in increasing id order, oldest first; serves the newest ``retention`` rows."""

    def __init__(self, retention: int) -> None:
        self.retention = retention
        self.rows: list[Row] = []
        self.trimmed = False  # rows were dropped for retention

    def extend(self, rows: list[Row]) -> None:
        self.rows.extend(rows)
        excess = len(self.rows) - self.retention
        if excess > max(1000, self.retention // 4):  # trim in chunks, amortised O(1)
            del self.rows[:excess]
            self.trimmed = True

    def _oldest_index(self) -> int:
        return max(0, len(self.rows) - self.retention)

    def served(self) -> tuple[int, bool]:
        """(index of the oldest row served, whether older rows of this run are gone)."""
        oldest = self._oldest_index()
        return oldest, self.trimmed or oldest > 0

    def recent(self, limit: int) -> list[Row]:
        return self.rows[max(self._oldest_index(), len(self.rows) - limit) :]

    def from_id(self, from_id: int, limit: int) -> list[Row]:
        """Rows with id >= ``from_id`` (from the oldest retained one if older), oldest first."""
        start = max(self._oldest_index(), bisect.bisect_left(self.rows, from_id, key=_id))
        return self.rows[start : start + limit]

    def between(self, start_us: int | None, end_us: int | None, limit: int) -> list[Row]:
        """Rows with ``start_us <= time_us <= end_us``, oldest first."""
        rows = self.rows
        lo = self._oldest_index()
        if start_us is not None:
            lo = max(lo, bisect.bisect_left(rows, start_us, key=_time_us))
        hi = len(rows) if end_us is None else bisect.bisect_right(rows, end_us, key=_time_us)
        return rows[lo : min(hi, lo + limit)]

    def index_at(self, time_ms: int) -> int:
        """Index of the first row with ``time >= time_ms`` (may be older than retention)."""
        return bisect.bisect_left(self.rows, time_ms, key=_time)


def _id(row: Trade | AggTrade) -> int:
    return row.id


def _time(row: Trade | AggTrade) -> int:
    return row.time


def _time_us(row: Trade | AggTrade) -> int:
    return row.time_us
