"""Per-symbol continuity of one stream kind's ids: a jump is a gap, an id at or below the last
is a duplicate.

The registry's ``Continuity`` says how ids advance: trade and aggregate ids by 1, book ticker
update ids by 1 (they jump whenever deeper levels change: such gaps are only counted), closed
klines' open times by 60 000 ms. Time ids are epoch ms or µs (``MICROS_FROM``): the step is
scaled to the unit of the id, and a last id kept in the other unit (a run in ms resumed by one
in µs) is converted before it is compared.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from cryptoflow.core.streams import DEFAULT_STREAMS, MICROS_FROM, StreamKind


@dataclass(frozen=True)
class Gap:
    """Ids ``first..last`` (inclusive, ``step`` apart) of ``symbol`` that the stream of kind
    ``kind`` did not deliver."""

    symbol: str
    first: int
    last: int
    step: int = 1
    kind: str = DEFAULT_STREAMS[0]

    @property
    def size(self) -> int:
        return (self.last - self.first) // self.step + 1


def is_time(kind: StreamKind) -> bool:
    """Whether ``kind``'s continuity id is a time (so its step is in ms, scaled for µs)."""
    cont = kind.continuity
    return cont is not None and any(f.key == cont.field and f.kind == "time" for f in kind.fields)


def in_unit(value: int, like: int) -> int:
    """``value`` (epoch ms or µs) in the unit of ``like``."""
    if value >= MICROS_FROM and like < MICROS_FROM:
        return value // 1000
    if value < MICROS_FROM <= like:
        return value * 1000
    return value


class GapTracker:
    """Remembers the highest id seen per symbol (seeded from Kafka on start) of one kind.

    The reader calls ``observe`` per frame; the backfill thread calls ``claim_after`` when a
    REST probe found records newer than any frame; a lock keeps the two consistent.
    """

    def __init__(
        self,
        last_ids: dict[str, int] | None = None,
        step: int = 1,
        timed: bool = False,
        kind: str = DEFAULT_STREAMS[0],
    ) -> None:
        self.last: dict[str, int] = dict(last_ids or {})
        self.base_step = step
        self.timed = timed
        self.kind = kind
        self._lock = threading.Lock()

    @classmethod
    def for_kind(cls, kind: StreamKind, last_ids: dict[str, int] | None = None) -> GapTracker:
        assert kind.continuity is not None
        return cls(last_ids, kind.continuity.step, is_time(kind), kind.name)

    def step(self, ident: int) -> int:
        """The step between two ids in the unit of ``ident`` (µs times: 1000 x the ms step)."""
        return self.base_step * 1000 if self.timed and ident >= MICROS_FROM else self.base_step

    def claim_after(self, symbol: str, newest_id: int) -> Gap | None:
        """Ids after the last seen up to ``newest_id`` (which REST knows of) become a gap the
        caller fills; later frames with those ids count as duplicates."""
        with self._lock:
            prev = self.last.get(symbol)
            if prev is None:
                return None
            if self.timed:
                prev = in_unit(prev, newest_id)
            step = self.step(newest_id)
            if newest_id <= prev:
                return None
            self.last[symbol] = newest_id
            return Gap(symbol, prev + step, newest_id, step, self.kind)

    def observe(self, symbol: str, ident: int) -> tuple[Gap | None, bool]:
        """Record an id; returns ``(gap before it or None, is_duplicate)``.

        A symbol seen for the first time (nothing in Kafka yet) starts without a gap: there is
        no earlier id to be continuous with.
        """
        with self._lock:
            prev = self.last.get(symbol)
            if prev is None:
                self.last[symbol] = ident
                return None, False
            if self.timed:
                prev = in_unit(prev, ident)
            if ident <= prev:
                return None, True
            self.last[symbol] = ident
        step = self.step(ident) if self.timed else self.base_step
        if ident - step < prev + step:  # the next id, or one off the step's grid: no id missed
            return None, False
        return Gap(symbol, prev + step, ident - step, step, self.kind), False


def now_in_unit(like: int) -> int:
    """The wall clock as epoch ms or µs, the unit of ``like``."""
    return int(time.time() * (1_000_000 if like >= MICROS_FROM else 1000))
