"""The executor tasks' plain functions (``pipelines.batch_tasks``) on small Arrow tables."""

from __future__ import annotations

import json
import math
import random

import pyarrow as pa

from cryptoflow.core.streams import KLINE_1M, TRADE
from pipelines.batch_tasks import (
    CLASS,
    LOOKUP,
    KindTask,
    classify_partition,
    counts,
    merged_counts,
    nearest_rank,
    order_statistics,
)


def _rows(*rows: tuple) -> list[pa.RecordBatch]:
    """(kind, symbol, record_id, dropped, partition, offset, is_closed) rows, in two batches
    as a task receives them."""
    names = ["kind", "symbol", "record_id", "dropped", "kafka_partition", "kafka_offset",
             "is_closed"]  # fmt: skip
    padded = [(*r, *([None] * (len(names) - len(r)))) for r in rows]
    table = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in padded])
    half = len(rows) // 2
    return [*table.slice(0, half).to_batches(), *table.slice(half).to_batches()]


def _classified(batches, kinds) -> list[tuple]:
    out = pa.Table.from_batches(list(classify_partition(iter(batches), kinds)))
    return list(zip(out.column(CLASS).to_pylist(), out.column(LOOKUP).to_pylist(), strict=True))


def test_a_partition_is_classified_within_itself_and_against_the_key_index():
    kinds = [KindTask(TRADE, "trade_unique", {"BTC": 10}), KindTask(KLINE_1M, "kline_unique", {})]
    batches = _rows(
        ("trade", "BTC", 11, False, 1, 5),  # above the index: new, no look-up
        ("trade", "BTC", 11, False, 0, 9),  # same key, earlier Kafka position: it wins
        ("trade", "BTC", 7, False, 0, 1),  # at or below the index: new unless silver holds it
        ("trade", "BTC", 7, False, 0, 2),  # its repeat in the batch: a duplicate either way
        ("trade", None, None, True, 0, 3),  # rejected by a drop rule
        (None, None, None, True, 2, 0),  # a topic no kind reads
        ("kline_1m", "BTC", 60, False, 2, 1, False),  # an open kline: live
        ("kline_1m", "BTC", 60, False, 2, 2, True),  # its close: new
    )
    assert _classified(batches, kinds) == [
        ("duplicate", False),
        ("new", False),
        ("new", True),
        ("duplicate", False),
        ("rejected", False),
        ("rejected", False),
        ("live", False),
        ("new", False),
    ]


def test_an_empty_partition_yields_nothing():
    assert list(classify_partition(iter([]), [KindTask(TRADE, "trade_unique", {})])) == []


def test_latency_histograms_give_the_percentiles_of_the_values_themselves():
    rng = random.Random(7)
    for n in (1, 2, 5, 99, 100, 1000):
        values = [rng.randint(0, 2500) for _ in range(n)]
        halves = [json.dumps(counts(pa.array(values[: n // 2]))),
                  json.dumps(counts(pa.array(values[n // 2 :] + [None])))]  # fmt: skip
        histogram = merged_counts(halves)
        assert sum(histogram.values()) == n
        assert nearest_rank(histogram, 0.50) == _nearest_rank(values, 0.50)
        assert nearest_rank(histogram, 0.99) == _nearest_rank(values, 0.99)
        stats, weight = order_statistics(histogram, k=256)
        assert stats.size == min(n, 256) and abs(stats.size * weight - n) < 1e-9
        assert list(stats) == sorted(stats) and stats[0] == min(values)
        assert stats[-1] == max(values)
    assert nearest_rank({}, 0.5) is None and order_statistics({})[0].size == 0
    hundred = counts(pa.array(list(range(1, 101))))
    assert (nearest_rank(hundred, 0.5), nearest_rank(hundred, 0.99)) == (50.0, 99.0)


def _nearest_rank(values: list[int], q: float) -> float:
    """The ``q`` quantile of ``values`` by nearest rank, from the sorted values themselves."""
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


def test_highest_ids_per_symbol_as_dedup_reckons_them():
    from pipelines.batch_tasks import candidates, highest_ids
    from pipelines.silver.dedup import new_keys

    a3, b9 = ("trade", "A", 3, False, 0, 0), ("trade", "B", 9, False, 0, 1)
    a5 = ("trade", "A", 5, False, 0, 2)
    batches = _rows(a3, b9, a5)
    rows = pa.Table.from_batches(batches)
    assert highest_ids(rows) == dict(new_keys(candidates(rows), ["new"] * 3)) == {"A": 5, "B": 9}
    assert highest_ids(rows.slice(0, 0)) == {}
