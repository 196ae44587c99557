"""Suite loader and GE -> Spark SQL translator: every rule on small frames, pass and fail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cryptoflow.core.config import load_settings
from expectations.params import sql_literal, suite_parameters
from expectations.rules import metrics_rules, trade_rules, unique_key_rule
from expectations.suites import SuiteError, read_suite, resolved_suite
from expectations.translate import to_sql

NOW = datetime.now(UTC).replace(microsecond=0)
D = Decimal


def base_settings(**kw):
    return load_settings(environ={}, dotenv=None, **kw)


def good_trade(**changes):
    row = dict(
        symbol="BTCUSDT",
        trade_id=12345,
        price=D("90000.01"),
        quantity=D("0.001"),
        is_buyer_maker=True,
        event_time=NOW,
        trade_time=NOW - timedelta(milliseconds=3),
        ingestion_time=NOW + timedelta(milliseconds=5),
        spark_time=NOW + timedelta(milliseconds=50),
        exchange_latency_ms=5,
        source_latency_ms=8,
        end_to_end_latency_ms=53,
        source="live",
        stream="btcusdt@trade",
        event_type="trade",
        parse_error=None,
    )
    row.update(changes)
    return row


TRADE_SCHEMA = (
    "symbol string, trade_id long, price decimal(18,8), quantity decimal(18,8), "
    "is_buyer_maker boolean, event_time timestamp, trade_time timestamp, "
    "ingestion_time timestamp, spark_time timestamp, exchange_latency_ms long, "
    "source_latency_ms long, end_to_end_latency_ms long, source string, stream string, "
    "event_type string, parse_error string"
)

# rule -> rows that must fail it (each changes a good trade).
TRADE_FAILURES: dict[str, list[dict]] = {
    "frame_parses": [dict(parse_error="invalid JSON")],
    "event_type_is_trade": [dict(event_type="aggTrade")],
    "stream_matches_symbol": [dict(stream="ethusdt@trade"), dict(stream="btcusdt@depth")],
    "symbol_not_null": [dict(symbol=None, stream=None)],
    "trade_id_not_null": [dict(trade_id=None)],
    "price_not_null": [dict(price=None)],
    "quantity_not_null": [dict(quantity=None)],
    "is_buyer_maker_not_null": [dict(is_buyer_maker=None)],
    "event_time_not_null": [dict(event_time=None)],
    "trade_time_not_null": [dict(trade_time=None)],
    "ingestion_time_not_null": [dict(ingestion_time=None)],
    "symbol_well_formed": [dict(symbol="btcusdt", stream=None), dict(symbol="BTC-USDT")],
    "symbol_known": [dict(symbol="DOGEUSDT", stream="dogeusdt@trade")],
    "trade_id_non_negative": [dict(trade_id=-1)],
    "price_positive": [dict(price=D("0")), dict(price=D("-1.5"))],
    "price_not_absurd": [dict(price=D("1000000000.00000001"))],
    "quantity_positive": [dict(quantity=D("0")), dict(quantity=D("-0.1"))],
    "quantity_not_absurd": [dict(quantity=D("5000000000"))],
    "trade_time_not_before_2017": [dict(trade_time=datetime(2016, 12, 31, 23, 59, 59))],
    "trade_time_not_in_future": [dict(trade_time=NOW + timedelta(hours=1))],
    "event_time_not_before_2017": [dict(event_time=datetime(2010, 1, 1))],
    "event_time_not_in_future": [dict(event_time=NOW + timedelta(days=2))],
    "event_not_before_trade": [dict(event_time=NOW - timedelta(seconds=5))],
    "exchange_latency_in_range": [dict(exchange_latency_ms=-1), dict(exchange_latency_ms=10**8)],
    "source_latency_in_range": [dict(source_latency_ms=-5)],
    "end_to_end_latency_in_range": [dict(end_to_end_latency_ms=60_001)],
    "source_known": [dict(source="carrier-pigeon")],
}

# rule -> rows that must pass it although they look odd (GE semantics: NULLs are skipped).
TRADE_EDGE_PASSES: dict[str, list[dict]] = {
    "price_positive": [dict(price=None), dict(price=D("0.00000001"))],
    "price_not_absurd": [dict(price=D("1000000000"))],
    "stream_matches_symbol": [dict(stream=None)],
    "event_not_before_trade": [dict(event_time=NOW - timedelta(milliseconds=1003))],
    "trade_time_not_before_2017": [dict(trade_time=datetime(2017, 1, 1))],
    "trade_time_not_in_future": [
        dict(trade_time=NOW + timedelta(seconds=30), event_time=NOW + timedelta(seconds=30))
    ],
    "exchange_latency_in_range": [dict(exchange_latency_ms=0), dict(exchange_latency_ms=60_000)],
}


def evaluate(spark, rules, rows, schema):
    from pyspark.sql import functions as F

    df = spark.createDataFrame(rows, schema)
    checked = df.select(*[F.expr(x.expression).alias(x.name) for x in rules])
    return [r.asDict() for r in checked.collect()]


# ----- loader and translator without Spark


def test_suites_load_with_ge_and_every_rule_has_name_and_action():
    for name in ("silver_trades", "gold_metrics"):
        suite = read_suite(name)
        assert type(suite).__name__ == "ExpectationSuite"
        assert suite.expectations, name
        for e in suite.expectations:
            assert e.meta["action"] in ("warn", "drop", "fail")


def test_trade_rules_cover_the_contract_and_unique_key():
    names = [r.name for r in trade_rules(base_settings())]
    assert len(names) == len(set(names))
    assert set(TRADE_FAILURES) == set(names)
    key = unique_key_rule(base_settings())
    assert (key.name, key.action) == ("trade_unique", "drop")


def test_parameters_come_from_settings():
    rules = {r.name: r for r in trade_rules(base_settings(symbols=["SOLUSDT"], dq_max_price=7))}
    assert "'SOLUSDT'" in rules["symbol_known"].expression
    assert "BTCUSDT" not in rules["symbol_known"].expression
    assert "<= 7" in rules["price_not_absurd"].expression
    lengths = {r.name: r for r in metrics_rules(base_settings(window_seconds=10))}
    assert "(10, 60)" in lengths["window_length_configured"].expression


def test_resolved_suite_fills_values_for_ge():
    s = base_settings(symbols=["BTCUSDT", "ETHUSDT"])
    params = suite_parameters(s, now=NOW)
    suite = resolved_suite(read_suite("silver_trades"), params)
    by_rule = {e.meta["rule"]: e.configuration.kwargs for e in suite.expectations}
    assert list(by_rule["symbol_known"]["value_set"]) == ["BTCUSDT", "ETHUSDT"]
    assert by_rule["trade_time_not_in_future"]["max_value"] == NOW + timedelta(seconds=60)
    assert "-1000" in by_rule["event_not_before_trade"]["unexpected_rows_query"]


@pytest.mark.parametrize(
    "value, literal",
    [
        (True, "TRUE"),
        (3, "3"),
        (0.0, "0.0"),
        (1e9, "1000000000.0"),
        (1e20, "100000000000000000000BD"),
        (D("0.00000001"), "0.00000001"),
        ("it's", "'it\\'s'"),
        ("a\\d", "'a\\\\d'"),
        (datetime(2017, 1, 1, tzinfo=UTC), "TIMESTAMP'2017-01-01 00:00:00.000000'"),
    ],
)
def test_sql_literals_are_exact(value, literal):
    assert sql_literal(value) == literal


def write_suite(tmp_path, expectations):
    (tmp_path / "bad.json").write_text(json.dumps({"name": "bad", "expectations": expectations}))
    return tmp_path


def nn(rule, action="drop", column="price"):
    return {
        "type": "expect_column_values_to_not_be_null",
        "kwargs": {"column": column},
        "meta": {"rule": rule, "action": action},
    }


@pytest.mark.parametrize(
    "expectations, message",
    [
        ([{**nn("x"), "meta": {"action": "drop"}}], "meta.rule"),
        ([nn("x"), nn("x", column="quantity")], "meta.rule 'x' is used twice"),
        ([nn("x", action="quarantine")], "meta.action is 'quarantine'"),
    ],
)
def test_bad_suite_files_are_rejected_with_the_reason(tmp_path, expectations, message):
    with pytest.raises(SuiteError, match=message):
        read_suite("bad", write_suite(tmp_path, expectations))


def test_missing_suite_names_the_path(tmp_path):
    with pytest.raises(SuiteError, match="not found: expected .*nope.json"):
        read_suite("nope", tmp_path)


def test_unknown_parameter_and_untranslatable_query_are_errors(tmp_path):
    params = suite_parameters(base_settings())
    exps = [
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "symbol", "value_set": {"$PARAMETER": "nope"}},
            "meta": {"rule": "a", "action": "drop"},
        },
        {
            "type": "unexpected_rows_expectation",
            "kwargs": {"unexpected_rows_query": "SELECT symbol FROM {batch} GROUP BY symbol"},
            "meta": {"rule": "b", "action": "warn"},
        },
        {
            "type": "expect_column_values_to_be_unique",
            "kwargs": {"column": "trade_id"},
            "meta": {"rule": "c", "action": "warn"},
        },
    ]
    suite = read_suite("bad", write_suite(tmp_path, exps))
    with pytest.raises(SuiteError, match="unknown suite parameter 'nope'"):
        to_sql(suite.expectations[0], params)
    with pytest.raises(SuiteError, match="SELECT \\* FROM \\{batch\\} WHERE"):
        to_sql(suite.expectations[1], params)
    with pytest.raises(SuiteError, match="no hot-path translation"):
        to_sql(suite.expectations[2], params)


def test_bad_min_trade_time_setting_is_a_config_error():
    from cryptoflow.core.errors import ConfigError

    with pytest.raises(ConfigError, match="CRYPTOFLOW_DQ_MIN_TRADE_TIME='2017/01/01'"):
        trade_rules(base_settings(dq_min_trade_time="2017/01/01"))


# ----- the expressions on small Spark frames


@pytest.mark.integration
def test_each_trade_rule_fails_its_bad_rows_and_passes_good_ones(spark):
    rules = trade_rules(base_settings())
    cases = [(None, good_trade())]
    cases += [(rule, good_trade(**c)) for rule, cs in TRADE_FAILURES.items() for c in cs]
    cases += [(f"edge:{r}", good_trade(**c)) for r, cs in TRADE_EDGE_PASSES.items() for c in cs]
    results = evaluate(spark, rules, [row for _, row in cases], TRADE_SCHEMA)
    for (expected, row), result in zip(cases, results, strict=True):
        assert None not in result.values(), f"an expression evaluated to NULL for {row}"
        failed = {name for name, ok in result.items() if not ok}
        if expected is None or expected.startswith("edge:"):
            allowed = {"price_not_null"} if row["price"] is None else set()
            assert failed == allowed, (expected, failed)
        else:
            assert expected in failed, (expected, row)


METRICS_SCHEMA = (
    "symbol string, window_start timestamp, window_end timestamp, trade_count long, "
    "total_volume decimal(28,8), avg_price decimal(38,12), min_price decimal(18,8), "
    "max_price decimal(18,8), vwap decimal(38,12), buy_volume decimal(28,8), "
    "sell_volume decimal(28,8)"
)


def good_metric(**changes):
    row = dict(
        symbol="BTCUSDT",
        window_start=NOW,
        window_end=NOW + timedelta(seconds=5),
        trade_count=3,
        total_volume=D("0.6"),
        avg_price=D("100.5"),
        min_price=D("100"),
        max_price=D("101"),
        vwap=D("100.7"),
        buy_volume=D("0.25"),
        sell_volume=D("0.35"),
    )
    row.update(changes)
    return row


METRIC_FAILURES = {
    "symbol_not_null": dict(symbol=None),
    "window_start_not_null": dict(window_start=None),
    "window_end_not_null": dict(window_end=None),
    "trade_count_positive": dict(trade_count=0),
    "avg_price_at_least_min": dict(avg_price=D("99.99")),
    "avg_price_at_most_max": dict(avg_price=D("101.01")),
    "vwap_at_least_min": dict(vwap=D("99")),
    "vwap_at_most_max": dict(vwap=D("102")),
    "volume_split_adds_up": dict(buy_volume=D("0.25000001")),
    "window_length_configured": dict(window_end=NOW + timedelta(seconds=7)),
    "total_volume_positive": dict(total_volume=D("0"), buy_volume=D("0"), sell_volume=D("0")),
}


@pytest.mark.integration
def test_each_metrics_rule_fails_its_bad_row(spark):
    rules = metrics_rules(base_settings())
    assert {r.name for r in rules} == set(METRIC_FAILURES)
    rows = [good_metric(), good_metric(window_end=NOW + timedelta(seconds=60))]
    rows += [good_metric(**c) for c in METRIC_FAILURES.values()]
    results = evaluate(spark, rules, rows, METRICS_SCHEMA)
    assert all(results[0].values()) and all(results[1].values())
    for expected, result in zip(METRIC_FAILURES, results[2:], strict=True):
        failed = {name for name, ok in result.items() if not ok}
        assert expected in failed, (expected, failed)
        assert None not in result.values()


def test_the_hot_path_reads_every_suite_without_ge_and_gets_ges_rules():
    """``read_suite_plain`` (the hot path's reader: GE's import costs seconds of every
    start) gives each shipped suite's expectations with the same rule, action and SQL as
    GE's own parse, and the pipeline's modules import without GE."""
    import subprocess
    import sys

    from expectations.suites import SUITES_DIR, action_of, read_suite_plain, rule_of
    from expectations.translate import TABLE_LEVEL

    params = suite_parameters(base_settings())

    def rules(suite):
        return [
            (e.expectation_type, rule_of(e), action_of(e),
             None if e.expectation_type in TABLE_LEVEL else to_sql(e, params))
            for e in suite.expectations
        ]  # fmt: skip

    names = sorted(p.stem for p in SUITES_DIR.glob("*.json"))
    assert names == [
        "gold_metrics",
        "silver_agg_trades",
        "silver_book_ticker",
        "silver_klines",
        "silver_trades",
    ]
    for name in names:
        assert rules(read_suite_plain(name)) == rules(read_suite(name)), name
    probe = "import sys, pipelines.job; print('great_expectations' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "False"
