"""Deduplication on (symbol, record id), within a batch and against what a silver table holds.

The record id is the stream kind's (``Entity.record_id``: the trade id, the aggregate id,
the kline's open time...). It grows per symbol, so silver's highest id per symbol
(``KeyIndex.high``) settles almost every row without reading silver: a key above it cannot
be there. Only keys at or below it (a gap backfill, a reconnect's overlap, a replayed topic)
are looked up in silver, and only those keys.
The functions here are plain Python over collected rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

NEW, DUPLICATE, REJECTED = "new", "duplicate", "rejected"

Key = tuple[str, int]


class Candidate(Protocol):
    """What classification reads of a row (a collected ``Row`` has these fields). A row
    with no symbol or record id cannot be stored in silver, so it is ``dropped``."""

    @property
    def symbol(self) -> str | None: ...
    @property
    def record_id(self) -> int | None: ...
    @property
    def dropped(self) -> bool: ...
    @property
    def kafka_partition(self) -> int: ...
    @property
    def kafka_offset(self) -> int: ...


def key_of(row: Candidate) -> Key:
    """The (symbol, record_id) of a row that is not ``dropped``."""
    if row.symbol is None or row.record_id is None:
        raise ValueError(f"a row that is not dropped has no key: {row}")
    return row.symbol, row.record_id


@dataclass
class KeyIndex:
    """Highest record id per symbol in a silver table as of ``version`` (-1: empty table)."""

    version: int
    high: dict[str, int] = field(default_factory=dict)

    def may_hold(self, key: Key) -> bool:
        """False when silver certainly lacks ``key``; True when it has to be looked up."""
        return key[1] <= self.high.get(key[0], -1)

    def advance(self, version: int, keys: Iterable[Key]) -> None:
        """Account for a commit (``version``) that added ``keys``."""
        for symbol, record_id in keys:
            if record_id > self.high.get(symbol, -1):
                self.high[symbol] = record_id
        self.version = version


def classify(
    rows: Sequence[Candidate],
    index: KeyIndex,
    lookup: Callable[[set[Key]], set[Key]],
) -> list[str]:
    """The class of each row, in ``rows`` order: ``rejected`` (a drop rule failed),
    ``duplicate`` (silver holds its key, or an earlier Kafka record of the batch has it) or
    ``new``.

    ``lookup(keys)`` returns which of ``keys`` silver holds (at ``index.version``); it is
    called once, and only with keys the index cannot settle. Within a batch the first
    record by (partition, offset) wins, a rejected record never shadows a valid one, so a
    replay classifies identically.
    """
    candidates = {key for key in (key_of(r) for r in rows if not r.dropped) if index.may_hold(key)}
    in_silver = lookup(candidates) if candidates else set()
    order = sorted(
        range(len(rows)),
        key=lambda i: (rows[i].dropped, rows[i].kafka_partition, rows[i].kafka_offset),
    )
    classes = [NEW] * len(rows)
    seen: set[Key] = set()
    for i in order:
        r = rows[i]
        if r.dropped:
            classes[i] = REJECTED
            continue
        key = key_of(r)
        if key in seen or key in in_silver:
            classes[i] = DUPLICATE
        else:
            seen.add(key)
    return classes


def new_keys(rows: Sequence[Candidate], classes: Sequence[str]) -> Mapping[str, int]:
    """Highest new record id per symbol of a classified batch."""
    high: dict[str, int] = {}
    for r, c in zip(rows, classes, strict=True):
        if c != NEW:
            continue
        symbol, record_id = key_of(r)
        if record_id > high.get(symbol, -1):
            high[symbol] = record_id
    return high
