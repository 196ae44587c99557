"""GE checkpoint over real Delta tables: results, time travel, dq_results, CLI, Data Docs."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cryptoflow.cli import build_parser
from cryptoflow.core.services.postgres import reader_dsn
from expectations.checkpoint import parse_as_of, run_validation
from expectations.history import recent_runs
from expectations.rules import trade_rules

pytestmark = pytest.mark.integration
#: Silver's Delta schema (the contract between engineers).
SILVER_SCHEMA = (
    "symbol string, trade_id long, price decimal(18,8), quantity decimal(18,8), "
    "is_buyer_maker boolean, event_time timestamp, trade_time timestamp, "
    "ingestion_time timestamp, spark_time timestamp, exchange_latency_ms long, "
    "source_latency_ms long, end_to_end_latency_ms long, source string, kafka_partition int, "
    "kafka_offset long, trade_date date"
)
NOW = datetime.now(UTC).replace(microsecond=0, tzinfo=None)


def silver_row(trade_id: int, **changes):
    trade_time = NOW - timedelta(seconds=10) + timedelta(milliseconds=trade_id)
    row = dict(
        symbol="BTCUSDT",
        trade_id=trade_id,
        price=Decimal("90000.01"),
        quantity=Decimal("0.001"),
        is_buyer_maker=trade_id % 2 == 0,
        event_time=trade_time + timedelta(milliseconds=2),
        trade_time=trade_time,
        ingestion_time=trade_time + timedelta(milliseconds=9),
        spark_time=trade_time + timedelta(milliseconds=90),
        exchange_latency_ms=7,
        source_latency_ms=9,
        end_to_end_latency_ms=90,
        source="simulator",
        kafka_partition=0,
        kafka_offset=trade_id,
        trade_date=trade_time.date(),
    )
    row.update(changes)
    return row


@pytest.fixture(scope="module")
def lake(settings, spark, tmp_path_factory):
    """Silver v0 (clean), silver v1 (+ bad rows), gold v0 with one broken window."""
    root = tmp_path_factory.mktemp("dq-lake")
    s = settings.replace(lake_root=str(root / "lake"))
    clean = [silver_row(i) for i in range(1, 21)]
    spark.createDataFrame(clean, SILVER_SCHEMA).write.format("delta").save(s.table_path("silver"))
    bad = [
        silver_row(21, quantity=Decimal("-1")),
        silver_row(22, source_latency_ms=999_999),
        silver_row(5),  # duplicate of trade 5
    ]
    spark.createDataFrame(bad, SILVER_SCHEMA).write.format("delta").mode("append").save(
        s.table_path("silver")
    )
    start = NOW.replace(second=0)
    gold = spark.sql(
        f"""SELECT 'BTCUSDT' symbol, TIMESTAMP'{start}' + make_dt_interval(0,0,0,id*5) window_start,
                   TIMESTAMP'{start}' + make_dt_interval(0,0,0,id*5 + IF(id = 2, 7, 5)) window_end,
                   3L trade_count, 0.6BD total_volume, 100.5BD avg_price, 100BD min_price,
                   101BD max_price, 100.7BD vwap, 0.25BD buy_volume, 0.35BD sell_volume
            FROM range(4)"""
    )
    gold.write.format("delta").save(s.table_path("gold"))
    return s


def failed_counts(run):
    return {o.rule: o.unexpected for o in run.failed}


def test_silver_latest_counts_match_the_hot_path_rules(lake, spark):
    run = run_validation(spark, lake, "silver")
    assert (run.delta_version, run.rows, run.success) == (1, 23, False)
    assert failed_counts(run) == {
        "quantity_positive": 1,
        "source_latency_in_range": 1,
        "trade_unique": 2,  # GE counts both copies of trade 5
    }
    # One definition: the Spark expressions silver runs agree with GE, rule by rule.
    from pyspark.sql import functions as F

    df = spark.read.format("delta").load(lake.table_path("silver"))
    rules = [r for r in trade_rules(lake) if r.name in {o.rule for o in run.outcomes}]
    fails = df.select(
        *[F.sum((~F.expr(r.expression)).cast("int")).alias(r.name) for r in rules]
    ).first()
    by_rule = {o.rule: o for o in run.outcomes}
    for r in rules:
        assert fails[r.name] == (by_rule[r.name].unexpected or 0), r.name
    assert "frame_parses" not in by_rule  # parse-level rules run in the hot path only


def test_as_of_version_and_timestamp_read_the_old_snapshot(lake, spark):
    run = run_validation(spark, lake, "silver", as_of="0")
    assert (run.delta_version, run.rows, run.success, run.failed) == (0, 20, True, [])
    stored = recent_runs(reader_dsn(lake), limit=50, table="silver")
    assert any(r.delta_version == 0 and r.success and r.rows == 20 for r in stored)
    assert parse_as_of("2026-11-26T01:00:00Z") == datetime(2026, 11, 26, 1, tzinfo=UTC)
    from expectations.checkpoint import read_version

    df, version = read_version(spark, lake, "silver", datetime.now(UTC))
    assert (version, df.count()) == (1, 23)
    with pytest.raises(Exception, match="no version at or before"):
        read_version(spark, lake, "silver", datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(Exception, match="expected a Delta version .* or an ISO timestamp"):
        parse_as_of("yesterday")


def test_validate_and_dq_commands(lake, capsys):
    parser = build_parser()
    args = parser.parse_args(["validate", "--table", "gold"])
    assert args.handler(lake, args) == 1
    out = capsys.readouterr().out
    assert "gold: suite=gold_metrics version=0 rows=4 FAILED" in out
    assert "failed window_length_configured (warn): 1 of" in out
    index = out.split("Data Docs: ")[1].strip()
    assert index.endswith("index.html")
    args = parser.parse_args(["dq", "--table", "gold"])
    assert args.handler(lake, args) == 0
    out = capsys.readouterr().out
    assert "gold" in out and "window_length_configured" in out and "FAILED" in out
    assert isinstance(args, argparse.Namespace)


def load_page(page, url: str) -> tuple[list[str], list[str]]:
    """(console errors, failed requests as "url: reason") once ``url`` and its fonts loaded."""
    from tests.conftest import wait_until

    page.events.clear()
    page.call("Page.navigate", url=url)
    settled = "document.readyState == 'complete' && document.fonts.status == 'loaded'"
    wait_until(lambda: page.evaluate(settled), 60, 0.2, url)
    page.drain()
    urls = {
        e["params"]["requestId"]: e["params"]["request"]["url"]
        for e in page.events
        if e["method"] == "Network.requestWillBeSent"
    }
    failed = [
        f"{urls.get(e['params']['requestId'], '?')}: {e['params'].get('errorText')}"
        for e in page.events
        if e["method"] == "Network.loadingFailed"
    ]
    return page.console_errors(), failed


def requested(page) -> list[str]:
    """URLs the page requested since the last ``load_page``."""
    return [e["params"]["request"]["url"] for e in page.events
            if e["method"] == "Network.requestWillBeSent"]  # fmt: skip


LOADED_FONTS = "[...document.fonts].filter(f => f.status == 'loaded').map(f => f.family)"


def test_data_docs_render_in_headless_chromium(lake, spark, tmp_path):
    """Index and a validation page load with no console error and no failed request.

    The site is self-contained (``expectations.docs_assets``): every script, stylesheet, font
    and image is a local file, so it renders fully on this machine and CI, which have no route
    to the CDNs GE's templates name.
    """
    from pathlib import Path

    from expectations.docs_assets import assets_dir, ensure_docs_assets
    from tests.cdp import chromium_binary, headless_page

    assert chromium_binary(), "chromium is not installed (.ci/apt-packages.txt)"
    ensure_docs_assets(lake.jar_cache, lake.maven_repo)  # what `cryptoflow setup` fetches
    assert (assets_dir(lake.jar_cache) / ".complete").is_file()
    run = run_validation(spark, lake, "gold", store=False)
    index = Path(run.docs_index or "")
    assert index.name == "index.html" and index.is_file()
    pages = sorted(index.parent.glob("validations/gold_metrics/**/*.html"))
    assert pages, "the checkpoint rendered the gold validation result"
    with headless_page(tmp_path / "profile") as page:
        page.call("Network.enable")
        errors, failed = load_page(page, index.as_uri())
        assert (errors, failed) == ([], []), "index.html"
        loaded = requested(page)
        assert any(u.endswith("/static/vendor/jquery/3.7.1/jquery.min.js") for u in loaded)
        assert all(u.startswith(("file://", "data:")) for u in loaded), loaded
        # jQuery, bootstrap-table and font-awesome did their work: the run list is drawn.
        assert page.evaluate("typeof jQuery.fn.bootstrapTable") == "function"
        assert any("Font Awesome" in f for f in page.evaluate(LOADED_FONTS))
        body = page.evaluate("document.body.innerText")
        assert "Expectation Suites" in body and "gold_metrics" in body
        errors, failed = load_page(page, pages[-1].as_uri())
        assert (errors, failed) == ([], []), pages[-1].name
        loaded = requested(page)
        assert all(u.startswith(("file://", "data:")) for u in loaded), loaded
        assert page.evaluate("typeof vegaEmbed") == "function"
        body = page.evaluate("document.body.innerText")
        assert "Expectation Suite: gold_metrics" in body
        assert "Unsuccessful Expectations" in body
