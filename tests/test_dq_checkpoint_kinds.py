"""GE checkpoints over the silver tables of aggTrade, kline_1m and bookTicker (real Delta).

Each table holds good rows and rows breaking several rules of its kind's suite. Every
expectation GE runs must run (a count, not an error), its unexpected count must be the one
written here, and it must agree rule by rule with the Spark expression the hot path evaluates
(``expectations.rules.row_rules``). Rules marked ``meta.hot_path_only`` read columns silver
does not keep: GE skips them. ``cryptoflow validate --table all`` and ``cryptoflow dq`` cover
the tables of the chosen stream kinds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cryptoflow.cli import build_parser
from cryptoflow.core.config import Settings
from cryptoflow.core.streams import AGG_TRADE, BOOK_TICKER, KLINE_1M, StreamKind
from expectations.checkpoint import run_validation
from expectations.rules import row_rules
from expectations.suites import suite_path
from expectations.tables import SUITE_OF_TABLE

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
MINUTE = NOW.replace(second=0)
MS = timedelta(milliseconds=1)
JUNE_2016 = datetime(2016, 6, 1, tzinfo=UTC)
ABSURD = Decimal("2000000000")  # above CRYPTOFLOW_DQ_MAX_PRICE / _MAX_QUANTITY (1e9)


def _row(kind: StreamKind, values: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A silver row of ``kind``: ``values`` with ``changes``, origin and date filled in."""
    row = dict(source="simulator", kafka_partition=0, kafka_offset=0) | values | changes
    column, stamp = kind.entity.date
    row[column] = (row[stamp] or NOW).date()
    assert set(row) == set(kind.columns), set(row) ^ set(kind.columns)
    return row


def agg_row(symbol: str, n: int, **changes: Any) -> dict[str, Any]:
    """Aggregate trade ``n``: trades 10n..10n+2, event 2 ms after the trade."""
    trade_time = changes.pop("trade_time", NOW - timedelta(seconds=10) + n * MS)
    values = dict(
        symbol=symbol, agg_trade_id=n, price=Decimal("90000.01"), quantity=Decimal("0.5"),
        first_trade_id=10 * n, last_trade_id=10 * n + 2, is_buyer_maker=n % 2 == 0,
        event_time=trade_time + 2 * MS, trade_time=trade_time,
        ingestion_time=trade_time + 9 * MS, spark_time=trade_time + 90 * MS,
    )  # fmt: skip
    return _row(AGG_TRADE, values, changes)


def kline_row(symbol: str, n: int, **changes: Any) -> dict[str, Any]:
    """The closed 1 m kline opening ``40 - n`` minutes before the current minute."""
    open_time = changes.pop("open_time", MINUTE - timedelta(minutes=40 - n))
    close_time = open_time + timedelta(seconds=60) - MS
    values = dict(
        symbol=symbol, interval="1m", open_time=open_time, close_time=close_time,
        open=Decimal(100), high=Decimal(105), low=Decimal(95), close=Decimal(101),
        volume=Decimal(10), quote_volume=Decimal(1000), trades=5,
        taker_buy_volume=Decimal(4), taker_buy_quote_volume=Decimal(400),
        first_trade_id=1000 * n, last_trade_id=1000 * n + 4, is_closed=True,
        event_time=close_time + MS, ingestion_time=close_time + 9 * MS,
        spark_time=close_time + 90 * MS,
    )  # fmt: skip
    return _row(KLINE_1M, values, changes)


def book_row(symbol: str, n: int, **changes: Any) -> dict[str, Any]:
    """Book ticker update ``n``: bid 100.00 x 1.5, ask 100.01 x 2.5."""
    received = NOW - timedelta(seconds=10) + n * MS
    values = dict(
        symbol=symbol, update_id=n, bid_price=Decimal("100.00"), bid_quantity=Decimal("1.5"),
        ask_price=Decimal("100.01"), ask_quantity=Decimal("2.5"), ingestion_time=received,
        spark_time=received + 90 * MS,
    )  # fmt: skip
    return _row(BOOK_TICKER, values, changes)


def agg_rows(sym: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Twelve good aggregate trades, then bad ones, and the unexpected count of each rule."""
    rows = [agg_row(sym, n) for n in range(1, 13)] + [
        agg_row(sym, 101, price=Decimal(0)),
        agg_row(sym, 102, first_trade_id=50, last_trade_id=40),
        agg_row(sym, 103, event_time=NOW - timedelta(seconds=15)),  # 5 s before its trade
        agg_row(sym.lower(), 104, quantity=None),
        agg_row(sym, 105, source="manual"),
        agg_row(sym, 106, trade_time=JUNE_2016),
        agg_row(sym, 107, event_time=NOW + timedelta(days=1)),
        agg_row(sym, 108, first_trade_id=-1),
        agg_row(sym, 109, price=ABSURD, quantity=ABSURD),
        agg_row(sym, -7, first_trade_id=1, last_trade_id=3),
        agg_row(sym, 111, event_time=None),
        agg_row(sym, 3),  # a repeated record
    ]
    return rows, {
        "agg_price_positive": 1,
        "agg_trade_range_ordered": 1,
        "agg_event_not_before_trade": 1,
        "agg_quantity_not_null": 1,
        "agg_symbol_well_formed": 1,
        "agg_symbol_known": 1,
        "agg_source_known": 1,
        "agg_trade_time_not_before_2017": 1,
        "agg_event_time_not_before_2017": 1,
        "agg_event_time_not_in_future": 1,
        "agg_first_trade_id_non_negative": 1,
        "agg_price_not_absurd": 1,
        "agg_quantity_not_absurd": 1,
        "agg_id_non_negative": 1,
        "agg_event_time_not_null": 1,
        "agg_unique": 2,  # GE counts both copies
    }


def kline_rows(sym: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Ten good closed klines, then bad ones, and the unexpected count of each rule."""
    rows = [kline_row(sym, n) for n in range(1, 11)] + [
        kline_row(sym, 21, close_time=MINUTE - timedelta(minutes=19)),  # a 60 s kline
        kline_row(sym, 22, open_time=MINUTE - timedelta(minutes=18, seconds=-1)),
        kline_row(sym, 23, high=Decimal(90)),  # below low
        kline_row(sym, 24, taker_buy_volume=Decimal(11)),  # above volume
        kline_row(sym, 25, trades=7),  # ids 25000..25004 are 5 trades
        kline_row(sym, 26, interval="5m"),
        kline_row(sym, 27, volume=Decimal(-1)),  # and taker buy volume above it
        kline_row(sym, 28, close_time=None),
        kline_row(sym, 29, open_time=JUNE_2016),  # and its event time
        kline_row(sym, 30, open_time=MINUTE + timedelta(days=2), spark_time=NOW),  # & event
        kline_row(sym, 31, low=Decimal(0)),
        kline_row(sym, 32, trades=-1),
        kline_row("XRPUSDT", 33),
        kline_row(sym, 2),  # a repeated record
    ]
    return rows, {
        "kline_close_time_is_open_plus_interval": 1,
        "kline_open_time_on_minute": 1,
        "kline_high_low_bracket": 1,
        "kline_taker_buy_within_volume": 2,
        "kline_trade_ids_match_count": 1,
        "kline_interval_known": 1,
        "kline_volume_non_negative": 1,
        "kline_close_time_not_null": 1,
        "kline_open_time_not_before_2017": 1,
        "kline_event_time_not_before_2017": 1,
        "kline_open_time_not_in_future": 1,
        "kline_event_time_not_in_future": 1,
        "kline_low_positive": 1,
        "kline_trades_non_negative": 1,
        "kline_symbol_known": 1,
        "kline_unique": 2,
    }


def book_rows(sym: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Ten good book tickers, then bad ones, and the unexpected count of each rule."""
    rows = [book_row(sym, n) for n in range(1, 11)] + [
        book_row(sym, 101, bid_price=Decimal("100.02")),  # crossed
        book_row(sym, 102, ask_price=Decimal(0)),  # and crossed
        book_row(sym, 103, bid_quantity=Decimal(-1)),
        book_row(sym, -5),
        book_row("DOGEUSDT", 105),
        book_row(sym, 106, ask_price=None),
        book_row(sym, 107, bid_price=ABSURD),  # and crossed
        book_row(sym, 108, source="replay"),
        book_row(sym, 109, ingestion_time=None),
        book_row(sym, 4),  # a repeated record
    ]
    return rows, {
        "book_not_crossed": 3,
        "book_ask_price_positive": 1,
        "book_bid_quantity_non_negative": 1,
        "book_update_id_non_negative": 1,
        "book_symbol_known": 1,
        "book_ask_price_not_null": 1,
        "book_bid_price_not_absurd": 1,
        "book_source_known": 1,
        "book_ingestion_time_not_null": 1,
        "book_unique": 2,
    }


CASES = {AGG_TRADE.name: agg_rows, KLINE_1M.name: kline_rows, BOOK_TICKER.name: book_rows}
KIND = {k.name: k for k in (AGG_TRADE, KLINE_1M, BOOK_TICKER)}
#: The key uniqueness rule of each kind: table-level, no row expression.
KEY_RULE = {AGG_TRADE.name: "agg_unique", KLINE_1M.name: "kline_unique",
            BOOK_TICKER.name: "book_unique"}  # fmt: skip


@pytest.fixture(scope="module")
def lake(settings: Settings, spark, tmp_path_factory) -> Settings:
    """A lake with the three kinds' silver tables (good and bad rows) and a clean gold."""
    from pipelines.silver.tables import silver_schema

    root = tmp_path_factory.mktemp("dq-kinds-lake")
    s = settings.replace(lake_root=str(root / "lake"))
    for name, build in CASES.items():
        kind = KIND[name]
        rows, _ = build(s.symbols[0])
        ordered = [[r[c] for c in kind.columns] for r in rows]
        spark.createDataFrame(ordered, silver_schema(kind)).write.format("delta").save(
            s.table_path(kind.entity.lake)
        )
    start = MINUTE.replace(tzinfo=None)
    spark.sql(
        f"""SELECT 'BTCUSDT' symbol, TIMESTAMP'{start}' + make_dt_interval(0,0,0,id*5) window_start,
                   TIMESTAMP'{start}' + make_dt_interval(0,0,0,id*5 + 5) window_end,
                   3L trade_count, 0.6BD total_volume, 100.5BD avg_price, 100BD min_price,
                   101BD max_price, 100.7BD vwap, 0.25BD buy_volume, 0.35BD sell_volume
            FROM range(4)"""
    ).write.format("delta").save(s.table_path("gold"))
    return s


def test_hot_path_only_rules_read_columns_silver_does_not_keep():
    for kind in KIND.values():
        suite = json.loads(suite_path(kind.entity.suite).read_text())
        assert SUITE_OF_TABLE[kind.entity.lake] == kind.entity.suite
        for e in suite["expectations"]:
            kwargs = e["kwargs"]
            named = kwargs.get("column") or kwargs.get("unexpected_rows_query", "")
            missing = {"parse_error", "event_type", "stream"} & set(
                named.replace("(", " ").replace(",", " ").split()
            )
            if e["meta"].get("hot_path_only"):
                assert missing, (kind.name, e["meta"]["rule"])
                assert not missing & set(kind.columns), (kind.name, e["meta"]["rule"])
            else:
                assert not missing, (kind.name, e["meta"]["rule"])


@pytest.mark.parametrize("name", list(CASES))
def test_every_expectation_runs_under_ge_and_agrees_with_the_hot_path(name, lake, spark):
    from pyspark.sql import functions as F

    kind = KIND[name]
    table = kind.entity.lake
    rows, expected = CASES[name](lake.symbols[0])
    run = run_validation(spark, lake, table, store=False)
    assert (run.suite, run.delta_version, run.rows) == (kind.entity.suite, 0, len(rows))
    suite = json.loads(suite_path(kind.entity.suite).read_text())["expectations"]
    checked = [e["meta"]["rule"] for e in suite if not e["meta"].get("hot_path_only")]
    # Every one ran (GE orders results its own way); the hot-path-only ones were skipped.
    assert sorted(o.rule for o in run.outcomes) == sorted(checked)
    errored = [o.rule for o in run.outcomes if o.unexpected is None]
    assert errored == [], f"GE could not run {errored}"
    assert {o.rule: o.unexpected for o in run.failed} == expected
    assert {o.rule for o in run.outcomes if o.unexpected} == set(expected)

    # One definition: the hot path's Spark expressions fail the same rows, rule by rule.
    df = spark.read.format("delta").load(lake.table_path(table))
    rules = [r for r in row_rules(lake, kind.entity.suite) if r.name in checked]
    assert {r.name for r in rules} == set(checked) - {KEY_RULE[name]}
    fails = df.select(
        *[F.sum((~F.expr(r.expression)).cast("int")).alias(r.name) for r in rules]
    ).first()
    by_rule = {o.rule: o for o in run.outcomes}
    assert {r.name: fails[r.name] for r in rules} == {
        r.name: by_rule[r.name].unexpected for r in rules
    }


def test_validate_all_covers_the_chosen_kinds_and_dq_shows_them(lake, capsys):
    s = lake.replace(streams="aggTrade,kline_1m")
    parser = build_parser()
    args = parser.parse_args(["validate"])
    assert args.table == "all"
    assert args.handler(s, args) == 1
    out = capsys.readouterr().out
    assert "silver: skipped, the table does not exist yet" in out  # trades: none written here
    assert "book_ticker" not in out  # not a chosen kind
    assert "agg_trades: suite=silver_agg_trades version=0 rows=24 FAILED" in out
    assert "exchange_klines: suite=silver_klines version=0 rows=24 FAILED" in out
    assert "gold: suite=gold_metrics version=0 rows=4 PASSED" in out
    assert "failed agg_unique (drop): 2 of 24 rows" in out
    for table in ("agg_trades", "exchange_klines", "gold"):
        args = parser.parse_args(["dq", "--table", table, "--format", "json", "--limit", "1"])
        assert args.handler(s, args) == 0
        run = json.loads(capsys.readouterr().out)  # one run: one JSON line
        assert (run["table"], run["suite"]) == (table, SUITE_OF_TABLE[table])
        assert run["result"] == ("passed" if table == "gold" else "FAILED")
