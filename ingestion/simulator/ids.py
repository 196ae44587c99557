"""Trade, aggregate-trade and book-ticker update ids that never repeat across runs on the same
data directory (sequence kinds ``trade``, ``agg`` and ``book`` of each symbol).

Like the exchange, ids increase by one per symbol. A run reserves a block of ids per symbol in
``<data_dir>/simulator/ids.json`` (under an exclusive file lock) before it hands any of them
out, so a crash (SIGKILL) skips at most the rest of a block and two simulators sharing a data
directory never hand out the same id. A clean stop gives back the unused part of its block.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: First id of a symbol on a fresh data directory: above 2**31 like BTCUSDT's real trade ids,
#: so 32-bit integer bugs downstream show up in tests.
FIRST_ID = 3_000_000_001
BLOCK = 100_000


class IdSequence:
    """The next id of one sequence (``kind`` trade, agg or book of one symbol)."""

    def __init__(self, store: IdStore, key: str) -> None:
        self._store = store
        self._key = key
        self._next, self._end = store.reserve(key)

    def take(self) -> int:
        if self._next >= self._end:
            self._next, self._end = self._store.reserve(self._key, self._next)
        value = self._next
        self._next += 1
        return value

    @property
    def next_id(self) -> int:
        return self._next

    def release(self) -> None:
        self._store.release(self._key, self._next, self._end)


class IdStore:
    """The reservation file of one data directory."""

    def __init__(self, data_dir: Path, block: int = BLOCK) -> None:
        self.dir = Path(data_dir) / "simulator"
        self.path = self.dir / "ids.json"
        self.block = block

    def sequence(self, symbol: str, kind: str = "trade") -> IdSequence:
        return IdSequence(self, f"{symbol}.{kind}")

    @contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "ids.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self.path.read_text()) if self.path.exists() else {}
                before = dict(state)
                yield state
                if state != before:
                    tmp = self.path.with_suffix(".tmp")
                    with open(tmp, "w") as f:
                        json.dump(state, f, indent=1, sort_keys=True)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def reserve(self, key: str, wanted: int | None = None) -> tuple[int, int]:
        """Reserve the next block of ``key``: ``(first, end)``, end exclusive.

        ``wanted`` is the id the caller would like to continue with (the end of its previous
        block); it gets it unless another run reserved ids in between.
        """
        with self._locked() as state:
            free = state.get(key, FIRST_ID)
            first = max(free, wanted or 0)
            state[key] = first + self.block
        return first, first + self.block

    def release(self, key: str, next_id: int, end: int) -> None:
        """Give back ``[next_id, end)`` if nobody reserved ids after it."""
        with self._locked() as state:
            if state.get(key) == end:
                state[key] = next_id

    def peek(self) -> dict[str, int]:
        """The next free id of every sequence (for tests and status)."""
        return json.loads(self.path.read_text()) if self.path.exists() else {}
