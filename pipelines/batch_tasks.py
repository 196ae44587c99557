"""A micro-batch's per-row work as plain functions over Arrow tables, run in executor tasks
(``CRYPTOFLOW_BATCH_PLACEMENT=executors``, the default on a cluster) or, for the rows
helpers, in the driver (``pipelines.batch``).

In executors the batch is partitioned by symbol, so a symbol's trades, windows, candles,
klines and aggregates are all in one task, and two tasks never touch the same serving row:
1. ``classify_partition`` deduplicates each kind's rows on (symbol, record id) within the
   partition and against silver's key index (``KeyIndex.high``, shipped in the task). A key
   the index cannot settle is marked ``lookup``: its first row is new unless silver holds
   it, which one join in Spark decides (``pipelines.batch``) before anything is written;
2. ``serve_partition`` writes the partition's rows to PostgreSQL in one transaction
   (``pipelines.serve.serve_batch``) with its own ledger row (query, batch, partition) and
   returns one summary row: the driver merges those, and only those.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cryptoflow.core.streams import StreamKind
from pipelines.serve import Gold, serve_batch
from pipelines.serving import Rows, UpsertSpec
from pipelines.silver.dedup import DUPLICATE, NEW, REJECTED, KeyIndex, classify
from pipelines.silver.tables import QUARANTINE_SCHEMA

if TYPE_CHECKING:
    from pyspark.sql import Row

QUARANTINE_COLUMNS = QUARANTINE_SCHEMA.fieldNames()
#: Class of a valid row that is not final yet (an open kline): served live, not in silver.
LIVE = "live"
#: The columns ``classify_partition`` adds: the row's class, and whether it is the first row
#: of a key silver may hold (new unless the lookup finds the key).
CLASS, LOOKUP = "row_class", "lookup"
#: ``serve_partition``'s one row per task (maps as JSON text), as Arrow and Spark see it.
_SUMMARY = pa.schema(
    [("part", pa.int32()), ("input", pa.int64()), ("quarantined", pa.int64()),
     ("trades", pa.int64()), ("windows", pa.int64()), ("replayed", pa.bool_()),
     ("reconciled", pa.string()), ("new_rows", pa.string()), ("key_highs", pa.string()),
     ("latencies", pa.string()), ("late", pa.int64()), ("newest_us", pa.int64()),
     ("failed", pa.string())]
)  # fmt: skip
_DDL = {pa.int32(): "int", pa.int64(): "long", pa.bool_(): "boolean", pa.string(): "string"}
SUMMARY_SCHEMA = ", ".join(f"{f.name} {_DDL[f.type]}" for f in _SUMMARY)


class Keyed(NamedTuple):
    """What deduplication reads of a row (``dedup.Candidate``)."""

    symbol: str | None
    record_id: int | None
    dropped: bool
    kafka_partition: int
    kafka_offset: int


def candidates(table: pa.Table) -> list[Keyed]:
    """The rows of ``table`` as ``Keyed`` tuples, in table order."""
    columns = [table.column(name).to_pylist() for name in Keyed._fields]
    return [Keyed(*values) for values in zip(*columns, strict=True)]


def live_mask(table: pa.Table, kind: StreamKind) -> list[bool]:
    """Per row: valid but not final (``Entity.final`` false, an open kline)."""
    if kind.entity.final is None:
        return [False] * table.num_rows
    final = table.column(kind.entity.final).to_pylist()
    dropped = table.column("dropped").to_pylist()
    return [not d and f is False for d, f in zip(dropped, final, strict=True)]


def latest_live(
    table: pa.Table, classes: Sequence[str], kind: StreamKind, new: pa.Table
) -> pa.Table:
    """The last live row (by event time, then Kafka position) of each key that has no new
    final row in the batch: one row per key, as one upsert statement needs."""
    key = kind.entity.key
    final_keys = set(zip(*(new.column(c).to_pylist() for c in key), strict=True))
    rows = table.filter(pa.array([c == LIVE for c in classes], pa.bool_()))
    order = rows.sort_by([("event_time", "ascending"), ("kafka_partition", "ascending"),
                          ("kafka_offset", "ascending")])  # fmt: skip
    last: dict[tuple, int] = {}
    for i, k in enumerate(zip(*(order.column(c).to_pylist() for c in key), strict=True)):
        if k not in final_keys:
            last[k] = i
    return order.take(pa.array(sorted(last.values()), pa.int64()))


def served_rows(table: pa.Table, classes: Sequence[str], kind: StreamKind) -> tuple[pa.Table, Rows]:
    """``kind``'s new rows (silver's) and what its serving table gets: the new rows and the
    latest live ones."""
    new = table.filter(pa.array([c == NEW for c in classes], pa.bool_()))
    if LIVE not in classes:
        return new, new
    return new, pa.concat_tables([new, latest_live(table, classes, kind, new)])


def quarantine_row(
    r: Mapping[str, Any], row_class: str, raw: bytes | None, unique_name: str
) -> tuple:
    """The quarantine row of a rejected record or a duplicate (``raw``: its frame)."""
    reasons = [unique_name] if row_class == DUPLICATE else list(r["failed_expectations"])
    special = {"failed_expectations": reasons, "raw_value": raw, "quarantined_at": r["spark_time"]}
    return tuple(special[c] if c in special else r.get(c) for c in QUARANTINE_COLUMNS)


# ----- executor tasks
@dataclass(frozen=True)
class KindTask:
    """What a task needs of one stream kind (picklable: no Spark object)."""

    kind: StreamKind
    unique_rule: str  # the name duplicates are quarantined under
    high: Mapping[str, int]  # silver's highest record id per symbol before the batch


def _partition_table(batches: Iterator[pa.RecordBatch]) -> pa.Table | None:
    """The task's rows as one table (None for an empty partition)."""
    collected = list(batches)
    return pa.Table.from_batches(collected) if collected else None


def classify_partition(
    batches: Iterator[pa.RecordBatch], kinds: Sequence[KindTask]
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``: every row of the partition with its class (``new``, ``duplicate``,
    ``rejected``, ``live``) and ``lookup`` (module doc, step 1). A row of a topic no kind
    reads is rejected."""
    table = _partition_table(batches)
    if table is None:
        return
    classes: list[str] = [REJECTED] * table.num_rows
    lookup = [False] * table.num_rows
    names = table.column("kind").to_pylist()
    for task in kinds:
        mine = [i for i, name in enumerate(names) if name == task.kind.name]
        if not mine:
            continue
        part = table.take(pa.array(mine, pa.int64()))
        rows, live = candidates(part), live_mask(part, task.kind)
        settled = [i for i, is_live in enumerate(live) if not is_live]
        asked: set = set()

        def ask(keys: set, asked: set = asked) -> set:
            asked.update(keys)  # decided after the task, by a join with silver
            return set()

        index = KeyIndex(-1, dict(task.high))
        found = classify([rows[i] for i in settled], index, ask)
        for i, c in zip(settled, found, strict=True):
            classes[mine[i]] = c
            if c == NEW and (rows[i].symbol, rows[i].record_id) in asked:
                lookup[mine[i]] = True
        for i, is_live in enumerate(live):
            if is_live:
                classes[mine[i]] = LIVE
    out = table.append_column(CLASS, pa.array(classes, pa.string()))
    yield from out.append_column(LOOKUP, pa.array(lookup, pa.bool_())).to_batches()


@dataclass(frozen=True)
class ServeTask:
    """What ``serve_partition`` needs: where and as what to write, and the batch's
    watermark (µs: trades older are counted late)."""

    dsn: str
    query_id: str
    batch_id: int
    gold: Gold
    retry_seconds: float
    trades: KindTask
    others: Sequence[tuple[KindTask, UpsertSpec]]
    watermark_us: int


def serve_partition(
    batches: Iterator[pa.RecordBatch], task: ServeTask, part: int
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``: the partition's rows written to PostgreSQL in one transaction with its
    ledger row (module doc, step 2); yields its summary row (``SUMMARY_SCHEMA``)."""
    table = _partition_table(batches)
    if table is None:
        return
    classes = table.column(CLASS).to_pylist()
    names = table.column("kind").to_pylist()
    parts: dict[str, tuple[pa.Table, Rows]] = {}
    key_highs: dict[str, Mapping[str, int]] = {}
    for kind_task in [task.trades, *(k for k, _ in task.others)]:
        name = kind_task.kind.name
        mine = [i for i, n in enumerate(names) if n == name]
        of_kind = table.take(pa.array(mine, pa.int64()))
        kind_classes = [classes[i] for i in mine]
        parts[name] = served_rows(of_kind, kind_classes, kind_task.kind)
        key_highs[name] = highest_ids(parts[name][0])
    unique = {k.kind.name: k.unique_rule for k in [task.trades, *(k for k, _ in task.others)]}
    others = [i for i, c in enumerate(classes) if c in (REJECTED, DUPLICATE)]
    quarantined = [
        quarantine_row(r, classes[i], r["raw_value"], unique.get(names[i] or "", ""))
        for i, r in zip(others, table.take(pa.array(others, pa.int64())).to_pylist(), strict=True)
    ]
    trades = parts[task.trades.kind.name][0]
    served = serve_batch(
        task.dsn, task.query_id, task.batch_id, trades, quarantined, task.gold,
        task.retry_seconds, [(spec, parts[k.kind.name][1]) for k, spec in task.others], part=part,
    )  # fmt: skip
    times = pc.cast(trades.column("trade_time"), pa.int64()) if trades.num_rows else None
    flags = pc.list_flatten(table.column("failed_expectations"))
    summary = {
        "part": part,
        "input": table.num_rows,
        "quarantined": len(quarantined),
        "trades": served.trades,
        "windows": len(served.windows),
        "replayed": served.replayed,
        "reconciled": json.dumps(served.reconciled),
        "new_rows": json.dumps({name: p[0].num_rows for name, p in parts.items()}),
        "key_highs": json.dumps(key_highs),
        "latencies": json.dumps(counts(trades.column("end_to_end_latency_ms"))),
        "late": 0 if times is None else pc.sum(pc.less(times, task.watermark_us)).as_py() or 0,
        "newest_us": None if times is None else pc.max(times).as_py(),
        "failed": json.dumps(counts(flags)),
    }
    yield pa.RecordBatch.from_pylist([summary], schema=_SUMMARY)


def highest_ids(new: pa.Table) -> dict[str, int]:
    """The highest record id per symbol of a kind's new rows (``dedup.new_keys``, in Arrow)."""
    if not new.num_rows:
        return {}
    grouped = new.group_by("symbol").aggregate([("record_id", "max")]).to_pydict()
    return dict(zip(grouped["symbol"], grouped["record_id_max"], strict=True))


def counts(values: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """How often each non-null value occurs (keys as text: JSON)."""
    return {str(c["values"]): c["counts"] for c in pc.value_counts(values.drop_null()).to_pylist()}


def merged_counts(parts: Sequence[str]) -> dict[str, int]:
    """The sum of several ``counts`` (as JSON text)."""
    total: dict[str, int] = {}
    for text in parts:
        for value, n in json.loads(text).items():
            total[value] = total.get(value, 0) + n
    return total


def order_statistics(histogram: Mapping[str, int], k: int = 256) -> tuple[np.ndarray, float]:
    """At most ``k`` evenly spaced order statistics of the values a ``counts`` histogram
    stands for, and the weight of each (how many values it stands for)."""
    if not histogram:
        return np.empty(0), 1.0
    values = np.array(sorted(histogram, key=float), dtype=float)
    cumulative = np.cumsum([histogram[v] for v in sorted(histogram, key=float)])
    n = int(cumulative[-1])
    if n <= k:
        return np.repeat(values, np.diff(np.concatenate([[0], cumulative]))), 1.0
    ranks = np.linspace(0, n - 1, k).round().astype(int)
    return values[np.searchsorted(cumulative, ranks, side="right")], n / k


def nearest_rank(histogram: Mapping[str, int], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of the values a ``counts`` histogram stands for."""
    if not histogram:
        return None
    values = sorted(histogram, key=float)
    cumulative = np.cumsum([histogram[v] for v in values])
    rank = max(0, int(np.ceil(q * cumulative[-1])) - 1)
    return float(values[int(np.searchsorted(cumulative, rank, side="right"))])


def serve_in_task(batches: Iterator[pa.RecordBatch], task: ServeTask) -> Iterator[pa.RecordBatch]:
    """``serve_partition`` as a ``mapInArrow`` function: the task's partition is the ledger's
    part (the batch is partitioned by symbol the same way on a replay)."""
    from pyspark import TaskContext  # executor side

    context = TaskContext.get()
    yield from serve_partition(batches, task, context.partitionId() if context else 0)


@dataclass
class Tally:
    """What a batch did, for ``_record``: counts, and the histograms (``counts``) of the
    failed rule names and the new trades' end-to-end latencies."""

    input_rows: int
    new_rows: dict[str, int]
    quarantined: int
    failed: dict[str, int]
    latencies: dict[str, int]
    windows: int
    reconciled: dict[str, int]
    replayed: bool
    late: int
    key_highs: dict[str, dict[str, int]] = field(default_factory=dict)  # new keys per kind
    newest_us: int | None = None  # newest new trade time

    @classmethod
    def of(cls, summaries: Sequence[Row]) -> Tally:
        """The merged summary rows of a batch's executor tasks (``SUMMARY_SCHEMA``)."""
        highs: dict[str, dict[str, int]] = {}
        for r in summaries:
            for kind, keys in json.loads(r.key_highs).items():
                mine = highs.setdefault(kind, {})
                for symbol, high in keys.items():
                    mine[symbol] = max(high, mine.get(symbol, high))
        newest = [r.newest_us for r in summaries if r.newest_us is not None]
        return cls(
            input_rows=sum(r.input for r in summaries),
            new_rows=merged_counts([r.new_rows for r in summaries]),
            quarantined=sum(r.quarantined for r in summaries),
            failed=merged_counts([r.failed for r in summaries]),
            latencies=merged_counts([r.latencies for r in summaries]),
            windows=sum(r.windows for r in summaries),
            reconciled=merged_counts([r.reconciled for r in summaries]),
            replayed=bool(summaries) and all(r.replayed for r in summaries),
            late=sum(r.late for r in summaries),
            key_highs=highs,
            newest_us=max(newest) if newest else None,
        )
