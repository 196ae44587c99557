"""Decisions of the stream-level fault injectors, free of I/O so they can be tested alone."""

from __future__ import annotations

from collections import deque

from ingestion.simulator.frames import MALFORMED_KINDS
from ingestion.simulator.klines import FIELDS


class IdSkipper:
    """Per symbol: after every ``every`` streamed records (trades, or the records of another
    stream kind: one skipper per kind), the next ``run`` are held back from the stream (they
    still exist in REST and the record), so clients see a gap."""

    def __init__(self, run: int, every: int) -> None:
        self.run = run
        self.every = every
        self._streamed: dict[str, int] = {}
        self._skipping: dict[str, int] = {}
        self.skipped = 0
        self.ranges: deque[list] = deque(maxlen=10_000)  # [symbol, first id, last id]
        self._open: dict[str, list] = {}

    def skip(self, symbol: str, trade_id: int) -> bool:
        if self.run <= 0:
            return False
        left = self._skipping.get(symbol, 0)
        if left:
            self._skipping[symbol] = left - 1
            self._note(symbol, trade_id, new=False)
            return True
        streamed = self._streamed.get(symbol, 0) + 1
        if streamed > self.every:
            self._streamed[symbol] = 0
            self._skipping[symbol] = self.run - 1
            self._note(symbol, trade_id, new=True)
            return True
        self._streamed[symbol] = streamed
        return False

    def _note(self, symbol: str, trade_id: int, new: bool) -> None:
        self.skipped += 1
        if new:
            self._open[symbol] = [symbol, trade_id, trade_id]
            self.ranges.append(self._open[symbol])
        else:
            self._open[symbol][2] = trade_id


class EveryNth:
    """Fires on every ``every``-th call of ``next`` (never when ``every`` <= 0), each time
    with the next of ``choices`` in turn; ``fired`` counts the firings."""

    def __init__(self, every: int, choices: tuple[str, ...]) -> None:
        self.every = every
        self._choices = choices
        self._count = 0
        self.fired = 0

    def next(self) -> str | None:
        if self.every <= 0:
            return None
        self._count += 1
        if self._count < self.every:
            return None
        self._count = 0
        choice = self._choices[self.fired % len(self._choices)]
        self.fired += 1
        return choice


class MalformedInjector(EveryNth):
    """Says when to insert a malformed frame (after every ``every`` streamed records of one
    stream kind) and of which kind, cycling through ``MALFORMED_KINDS``."""

    def __init__(self, every: int) -> None:
        super().__init__(every, MALFORMED_KINDS)
        self.after_trade = self.next

    @property
    def sent(self) -> int:
        """Malformed frames said so far."""
        return self.fired


class KlineFaulter(EveryNth):
    """``--kline-fault-every N``: says which field of every Nth closed kline sent to alter,
    cycling through ``klines.FIELDS`` (o h l c v q n V Q f L)."""

    def __init__(self, every: int) -> None:
        super().__init__(every, tuple(FIELDS))
        self.next_field = self.next
