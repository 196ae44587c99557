"""Per-symbol trade-id continuity: a jump is a gap, an id at or below the last is a duplicate."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Gap:
    """Trade ids ``first..last`` (inclusive) of ``symbol`` that the stream did not deliver."""

    symbol: str
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class GapTracker:
    """Remembers the highest trade id seen per symbol (seeded from Kafka on start).

    The reader calls ``observe`` per frame; the backfill thread calls ``claim_after`` when a
    REST probe found trades newer than any frame; a lock keeps the two consistent.
    """

    def __init__(self, last_ids: dict[str, int] | None = None) -> None:
        self.last: dict[str, int] = dict(last_ids or {})
        self._lock = threading.Lock()

    def claim_after(self, symbol: str, newest_id: int) -> Gap | None:
        """Ids after the last seen up to ``newest_id`` (which REST knows of) become a gap the
        caller fills; later frames with those ids count as duplicates."""
        with self._lock:
            prev = self.last.get(symbol)
            if prev is None or newest_id <= prev:
                return None
            self.last[symbol] = newest_id
            return Gap(symbol, prev + 1, newest_id)

    def observe(self, symbol: str, trade_id: int) -> tuple[Gap | None, bool]:
        """Record a trade; returns ``(gap before it or None, is_duplicate)``.

        A symbol seen for the first time (nothing in Kafka yet) starts without a gap: there is
        no earlier id to be continuous with.
        """
        with self._lock:
            prev = self.last.get(symbol)
            if prev is None:
                self.last[symbol] = trade_id
                return None, False
            if trade_id <= prev:
                return None, True
            self.last[symbol] = trade_id
        if trade_id == prev + 1:
            return None, False
        return Gap(symbol, prev + 1, trade_id - 1), False
