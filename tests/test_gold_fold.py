"""Gold through the real pipeline: Kafka -> the ``trades`` query -> the metrics folded in
PostgreSQL (``metric_sums`` -> ``metrics``) and copied to Delta gold (``GoldSync``).

Every check is against the independent oracle (``tests/metrics_oracle.py``) over the trades
produced, with the latencies the pipeline recorded in raw_trades.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from delta.tables import DeltaTable

from cryptoflow.core.config import Settings
from pipelines import job
from pipelines.bronze.transform import BRONZE_SCHEMA
from pipelines.gold.transform import GOLD_SCHEMA, METRIC_COLUMNS
from pipelines.ops.tables import read_table
from pipelines.silver.tables import QUARANTINE_SCHEMA, SILVER_SCHEMA
from tests.conftest import wait_until
from tests.gold_data import random_trades
from tests.metrics_oracle import compare_metrics, expected_metrics, latencies_from_rows
from tests.pipeline_helpers import isolated, pg_rows, produce_trades, trade

pytestmark = pytest.mark.integration

LATENCY_COLUMNS = ("exchange_latency_ms", "source_latency_ms", "end_to_end_latency_ms")
#: The batch log line of ``pipelines.batch`` (its numbers this test reads).
BATCH_LINE = re.compile(
    r"^trades batch=(\d+) input=(\d+) output=(\d+) quarantined=(\d+) late=(\d+) "
)


# ----- reading the two stores back


def _pg_metrics(s: Settings) -> list[dict[str, Any]]:
    """PostgreSQL ``metrics`` rows of this test's symbols (METRIC_COLUMNS)."""
    rows = pg_rows(
        s,
        f"SELECT {', '.join(METRIC_COLUMNS)} FROM metrics WHERE symbol = ANY(%s)",
        (list(s.symbols),),
    )
    return [dict(zip(METRIC_COLUMNS, r, strict=True)) for r in rows]


def _latencies(s: Settings) -> dict:
    """The latencies the pipeline computed for this test's trades (raw_trades)."""
    names = ("symbol", "trade_id", *LATENCY_COLUMNS)
    rows = pg_rows(
        s, f"SELECT {', '.join(names)} FROM raw_trades WHERE symbol = ANY(%s)", (list(s.symbols),)
    )
    return latencies_from_rows(dict(zip(names, r, strict=True)) for r in rows)


def _gold(spark, s: Settings, version: int | None = None) -> list[dict[str, Any]]:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return [r.asDict() for r in reader.load(s.table_path("gold")).collect()]


def _gold_version(spark, s: Settings) -> int:
    return DeltaTable.forPath(spark, s.table_path("gold")).history(1).first().version


def _metric_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{c: r[c] for c in METRIC_COLUMNS} for r in rows]


def _keys(rows: list[dict[str, Any]]) -> list[tuple]:
    return [(r["symbol"], r["window_start"], r["window_end"]) for r in rows]


def _window(rows: list[dict[str, Any]], symbol: str, start_ms: int, seconds: int) -> dict:
    """The row of ``symbol``'s ``seconds``-long window starting at ``start_ms``."""
    (row,) = [
        r
        for r in rows
        if r["symbol"] == symbol
        and round(r["window_start"].timestamp() * 1000) == start_ms
        and (r["window_end"] - r["window_start"]).total_seconds() == seconds
    ]
    return row


def _drain(spark, s: Settings):
    """What Kafka holds now, through the query (``available_now``), then the final sync."""
    query = job.start(spark, s, available_now=True)
    assert query.awaitTermination(600), "the drain did not finish in 600 s"
    assert query.exception() is None, query.exception()
    job.stop(query)
    return query


def _query_id(s: Settings) -> str:
    """The query id Spark keeps in the checkpoint (the ledgers' and pipeline_batches' key)."""
    return json.loads((Path(s.checkpoint_path(job.QUERY)) / "metadata").read_text())["id"]


class _Lines(logging.Handler):
    """Collects the formatted messages of one logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def batches(self) -> list[tuple[int, ...]]:
        """(batch, input, output, quarantined, late) of every batch line, and clear."""
        found = [tuple(map(int, m.groups())) for m in map(BATCH_LINE.match, self.messages) if m]
        self.messages.clear()
        return found


# ----- one lake, drained twice on one checkpoint; the second drain backfills a late trade


@dataclass
class Backfill:
    settings: Settings
    first: list[dict]  # trades of the first drain
    second: list[dict]  # trades of the second drain (the late one last)
    late: dict
    newest_ms: int  # newest trade time of the first drain
    query_id: str
    pg_after_first: list[dict[str, Any]]
    gold_after_first: list[dict[str, Any]]
    gold_version_after_first: int
    lines_first: list[tuple[int, ...]]
    lines_second: list[tuple[int, ...]]
    latencies: dict
    #: pipeline_batches ``late`` by batch id, read right after the drains: its key is
    #: (job, batch_id), so another test's query restarting at batch 0 overwrites the rows.
    recorded_late: dict[int, int]


@pytest.fixture(scope="module")
def backfill(settings, spark, tmp_path_factory) -> Backfill:
    """One lake drained twice on one checkpoint, read back after each drain. Module-wide (a
    drain takes about a minute here): the restart, late-count and time-travel tests read it.
    ``unique`` and ``tmp_path`` are function fixtures, so their equivalents are made here."""
    unique = uuid.uuid4().hex[:8]
    s = isolated(settings, unique, tmp_path_factory.mktemp(f"gold-fold-{unique}"))
    a, b = s.symbols
    rng = random.Random(int(unique, 16))
    # A few minutes of the recent past: inside the suite's time bounds (not in the future,
    # after 2017); latencies of minutes only warn.
    base = (int(time.time() * 1000) - 8 * 60_000) // 60_000 * 60_000
    newest_ms = base + 180_000
    anchor = trade(a, 100_000, "30000.00000000", "0.50000000", base, False)  # opens [base, +5 s)
    top = trade(b, 100_000, "31000.00000000", "0.25000000", newest_ms, True)  # the newest
    first = sorted(random_trades(rng, [a, b], 200, base + 1, 179_000) + [anchor, top],
                   key=lambda t: t["T"])  # fmt: skip
    # Three minutes behind the newest trade processed: into the closed, served window of
    # ``anchor``, with a trade id never seen for its symbol.
    late = trade(a, 10**9, "29000.12345678", "7.00000000", newest_ms - 180_000, True)
    second = random_trades(rng, [a, b], 150, newest_ms + 1, 60_000, first_id=1_000) + [late]

    lines = _Lines()
    logger = logging.getLogger("pipelines.batch")
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        produce_trades(s, first)
        _drain(spark, s)
        lines_first = lines.batches()
        pg_after_first = _pg_metrics(s)
        gold_after_first = _gold(spark, s)
        version_after_first = _gold_version(spark, s)

        produce_trades(s, second)
        _drain(spark, s)  # the same checkpoint: resumes after the first drain's offsets
        lines_second = lines.batches()
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    query_id = _query_id(s)
    return Backfill(
        s, first, second, late, newest_ms, query_id, pg_after_first, gold_after_first,
        version_after_first, lines_first, lines_second, _latencies(s),
        _recorded_late(s, query_id),
    )  # fmt: skip


def test_restart_resumes_and_a_late_trade_corrects_its_closed_window(spark, backfill):
    bf, s = backfill, backfill.settings
    a = s.symbols[0]
    start_ms = bf.late["T"]  # == anchor's time: the 5 s and the 1 min window both start here
    assert start_ms == bf.newest_ms - 180_000
    assert start_ms % 60_000 == 0

    # After the first drain: PostgreSQL = the oracle; Delta gold (final sync) = PostgreSQL.
    want_first = expected_metrics(bf.first, s.window_seconds, latencies=bf.latencies)
    assert len(want_first) > 40
    assert compare_metrics(want_first, bf.pg_after_first) == []
    assert compare_metrics(want_first, bf.gold_after_first) == []
    assert compare_metrics(_metric_columns(bf.gold_after_first), bf.pg_after_first) == []
    assert len(bf.gold_after_first) == len(want_first)

    # After the second drain, over every trade: PostgreSQL = Delta gold = the oracle.
    everything = bf.first + bf.second
    want = expected_metrics(everything, s.window_seconds, latencies=bf.latencies)
    pg, gold = _pg_metrics(s), _gold(spark, s)
    assert compare_metrics(want, pg) == []
    assert compare_metrics(want, gold) == []
    assert compare_metrics(_metric_columns(gold), pg) == []
    assert len(_keys(gold)) == len(set(_keys(gold))), "duplicate windows in Delta gold"
    assert len(gold) == len(want)

    # The late trade's closed windows went up by exactly one trade, in both stores.
    for seconds in (s.window_seconds, 60):
        before = _window(bf.pg_after_first, a, start_ms, seconds)["trade_count"]
        assert before >= 1  # the window was served before the late trade came
        assert _window(bf.gold_after_first, a, start_ms, seconds)["trade_count"] == before
        assert _window(pg, a, start_ms, seconds)["trade_count"] == before + 1
        assert _window(gold, a, start_ms, seconds)["trade_count"] == before + 1

    # The restart resumed: the second drain read exactly the new records, nothing again.
    assert sum(line[1] for line in bf.lines_first) == len(bf.first)
    assert sum(line[1] for line in bf.lines_second) == len(bf.second)
    assert sum(line[3] for line in bf.lines_first + bf.lines_second) == 0  # no duplicates
    assert min(line[0] for line in bf.lines_second) > max(line[0] for line in bf.lines_first)
    applied = pg_rows(s, "SELECT sum(trades) FROM applied_batches WHERE query_id = %s",
                      (bf.query_id,))  # fmt: skip
    assert applied == [(len(everything),)]
    assert spark.read.format("delta").load(s.table_path("silver")).count() == len(everything)
    assert pg_rows(s, "SELECT count(*) FROM quarantine WHERE topic = %s", (s.kafka_topic,)) == [
        (0,)
    ]

    # The late trade was counted: in the batch log lines and in pipeline_batches, under this
    # query's id, for the second drain's batches.
    assert sum(line[4] for line in bf.lines_second) >= 1
    recorded = bf.recorded_late
    second_ids = [line[0] for line in bf.lines_second]
    assert set(second_ids) <= set(recorded), recorded
    assert sum(recorded[i] for i in second_ids) >= 1
    assert [recorded[line[0]] for line in bf.lines_second] == [line[4] for line in bf.lines_second]


def _recorded_late(s: Settings, query_id: str) -> dict[int, int]:
    """batch id -> ``late`` of the query's rows in pipeline_batches."""
    rows = pg_rows(
        s,
        "SELECT batch_id, late FROM pipeline_batches WHERE job = %s AND query_id = %s",
        (job.QUERY, query_id),
    )
    return dict(rows)


def _behind_own_newest(trades: list[dict], watermark_s: int) -> int:
    """How many ``trades`` are older than their own newest minus the watermark."""
    newest = max(t["T"] for t in trades)
    return sum(t["T"] < newest - watermark_s * 1000 for t in trades)


def test_late_counts_only_trades_behind_the_earlier_batches(backfill):
    """``late`` = trades older than (newest trade time of the earlier batches - watermark):
    none in the first drain (a fresh lake has no earlier batch), and in the second drain only
    the backfilled trade (the others are newer than everything of the first drain)."""
    bf, s = backfill, backfill.settings
    wm = s.watermark_seconds
    first = sum(line[4] for line in bf.lines_first)
    second = sum(line[4] for line in bf.lines_second)
    own = (_behind_own_newest(bf.first, wm), _behind_own_newest(bf.second, wm))
    why = (f"late: first drain {first}, second {second}; trades behind their own drain's "
           f"newest trade - {wm} s: {own[0]}, {own[1]}")  # fmt: skip
    assert (first, second) == (0, 1), why
    recorded = bf.recorded_late
    assert [recorded[line[0]] for line in bf.lines_first] == [0] * len(bf.lines_first)


def test_gold_time_travel_reads_an_earlier_version(spark, backfill):
    """``cryptoflow query ... --as-of V`` on gold: the version the first drain's final sync
    committed still reads, and holds exactly the first drain's windows."""
    bf, s = backfill, backfill.settings
    latest = _gold_version(spark, s)
    assert latest > bf.gold_version_after_first > 0  # created, then one MERGE per drain
    old = _gold(spark, s, bf.gold_version_after_first)
    assert compare_metrics(_metric_columns(bf.gold_after_first), old) == []
    want_first = expected_metrics(bf.first, s.window_seconds, latencies=bf.latencies)
    assert compare_metrics(want_first, old) == []
    as_of = read_table(spark, s, "gold", bf.gold_version_after_first)
    assert compare_metrics(want_first, [r.asDict() for r in as_of.collect()]) == []
    assert _gold(spark, s, 0) == []  # the empty table ensure_gold_table created
    assert len(_gold(spark, s, latest)) > len(old)


def test_starts_on_a_fresh_lake(spark, settings, unique, tmp_path):
    """The query creates the four Delta tables on a fresh lake, runs, and copies the folded
    windows to Delta gold while running (the sync thread), not only on stop."""
    s = isolated(settings, unique, tmp_path).replace(gold_sync_interval_ms=500)
    query = job.start(spark, s)
    try:
        query.processAllAvailable()
        assert query.isActive and query.exception() is None
        for name, schema in (
            ("bronze", BRONZE_SCHEMA),
            ("silver", SILVER_SCHEMA),
            ("quarantine", QUARANTINE_SCHEMA),
            ("gold", GOLD_SCHEMA),
        ):
            table = spark.read.format("delta").load(s.table_path(name))
            assert table.schema.fieldNames() == schema.fieldNames(), name
            assert table.count() == 0, name
        detail = DeltaTable.forPath(spark, s.table_path("gold")).detail().first()
        assert detail.partitionColumns == ["window_date"]

        base = int(time.time() * 1000) - 60_000
        payloads = random_trades(random.Random(7), list(s.symbols), 30, base, 20_000)
        produce_trades(s, payloads)

        windows = expected_metrics(payloads, s.window_seconds)  # latencies: compared below

        def synced():
            if query.exception() is not None:
                raise AssertionError(query.exception())
            return compare_metrics(windows, _gold(spark, s)) == []

        wait_until(synced, 240, 1.0, "Delta gold copied by the sync thread")
        want = expected_metrics(payloads, s.window_seconds, latencies=_latencies(s))
        assert compare_metrics(want, _pg_metrics(s)) == []
        assert compare_metrics(want, _gold(spark, s)) == []
    finally:
        job.stop(query)
    assert not query.isActive
