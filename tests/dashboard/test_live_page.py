"""The built-in live page: shaping, the JSON API over real PostgreSQL, and the page itself
driven in headless Chromium during a short simulated pipeline run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from cryptoflow.core.services import postgres
from cryptoflow.dashboard.data import Source, Window, shape_chart
from cryptoflow.dashboard.queries import VIEWS
from tests.cdp import headless_page
from tests.conftest import free_port, make_data_dir, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "dashboard.png"


def test_shape_chart_groups_in_order_keeps_decimals_exact_and_drops_null_values():
    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    rows = [
        ("BTCUSDT", "vwap", t0, Decimal("90000.12345678")),
        ("BTCUSDT", "vwap", t1, Decimal("90001.5")),
        ("BTCUSDT", "average price", t0, None),
        ("ETHUSDT", "vwap", t0, 3000),
    ]
    assert shape_chart(rows) == [
        {
            "panel": "BTCUSDT",
            "series": [
                {"name": "vwap", "points": [[1767225600000, "90000.12345678"],
                                            [1767225605000, "90001.5"]]},
            ],
        },
        {"panel": "ETHUSDT", "series": [{"name": "vwap", "points": [[1767225600000, 3000]]}]},
    ]  # fmt: skip


def _tables_present(settings) -> set[str]:
    from cryptoflow.core.db import connect

    with connect(postgres.admin_dsn(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        names = {r[0] for r in cur.fetchall()}
    conn.close()
    return names


@pytest.mark.integration
def test_snapshot_reads_every_view_with_the_read_only_login(settings, pipeline_run):
    source = Source(postgres.reader_dsn(settings), Window(15, settings.window_seconds))
    try:
        snap = source.snapshot()
    finally:
        source.close()
    assert snap["trades_in_range"] > 0 and snap["last_trade"]
    present = _tables_present(settings)
    views = {v["name"]: v for v in snap["views"]}
    assert list(views) == [v.name for v in VIEWS]
    for v in VIEWS:
        got = views[v.name]
        if v.table not in present:
            assert got == got | {"available": False,
                                 "reason": f"table {v.table} does not exist yet"}  # fmt: skip
            continue
        assert got["available"], got
        if v.kind == "table":
            assert got["rows"], f"view {v.name} returned no rows"
            continue
        points = [p for panel in got["panels"] for s in panel["series"] for p in s["points"]]
        assert points, f"view {v.name} returned no points"
    price = {p["panel"]: p for p in views["price"]["panels"]}
    assert {"BTCUSDT", "ETHUSDT", "BNBUSDT"} <= set(price)
    assert [s["name"] for s in price["BTCUSDT"]["series"]] == ["average price", "vwap"]
    latency = views["latency"]["panels"][0]["series"]
    assert [s["name"] for s in latency] == ["exchange", "source", "end to end", "serving"]
    json.dumps(snap)  # the API body is plain JSON


def _serve(settings, port: int) -> subprocess.Popen:
    """`cryptoflow dashboard` as a user starts it, configured through the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOFLOW_")}
    env.update(
        CRYPTOFLOW_DATA_DIR=str(settings.data_dir),
        CRYPTOFLOW_POSTGRES_PORT=str(settings.postgres_port),
        CRYPTOFLOW_POSTGRES_DB=settings.postgres_db,
    )
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "cryptoflow"), "dashboard", "--port", str(port),
         "--refresh", "1"],
        cwd=settings.data_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read()
    except OSError:
        return None


CHART_POINTS = """(() => Object.fromEntries([...document.querySelectorAll('section')].map(s =>
  [s.dataset.view, [...s.querySelectorAll('svg.chart')]
     .reduce((n, c) => n + Number(c.dataset.points), 0)])))()"""


@pytest.mark.integration
def test_live_page_renders_charts_updates_and_has_no_console_errors(settings, pipeline_run):
    port = free_port()
    server = _serve(settings, port)
    url = f"http://127.0.0.1:{port}/"
    profile = make_data_dir("cryptoflow-chromium-")
    try:
        wait_until(lambda: server.poll() is not None or _get(url + "healthz"), 60,
                   what="the dashboard to listen")  # fmt: skip
        assert server.poll() is None, server.stdout.read()
        with headless_page(profile) as page:
            page.call("Page.navigate", url=url)
            wait_until(lambda: page.evaluate("Number(document.body?.dataset.renders || 0)") >= 1,
                       60, what="the first render")  # fmt: skip
            present = _tables_present(settings)
            expected = [v.name for v in VIEWS if v.kind == "chart" and v.table in present]
            tables = [v.name for v in VIEWS if v.kind == "table" and v.table in present]
            points = wait_until(
                lambda: (p := page.evaluate(CHART_POINTS)) and all(p.get(n) for n in expected)
                and p, 60, what=f"charts with data in {expected}",
            )  # fmt: skip
            assert len(page.evaluate("[...document.querySelectorAll('path.series')]")) >= 10
            assert points["price"] > 0 and points["latency"] > 0
            for name in tables:
                rows = page.evaluate(f"document.querySelector('#view-{name} table')?.dataset.rows")
                assert int(rows or 0) > 0, f"table view {name} shows no rows"

            # While the pipeline writes, the page follows without a reload.
            first = page.evaluate("document.body.dataset.lastTrade")
            renders = page.evaluate("Number(document.body.dataset.renders)")
            pipeline_run.more()
            wait_until(lambda: page.evaluate("document.body.dataset.lastTrade") != first, 60,
                       what="the page to show the newer trades")  # fmt: skip
            assert page.evaluate("Number(document.body.dataset.renders)") > renders
            assert page.evaluate("document.getElementById('error').textContent") == ""

            page.drain()
            assert page.console_errors() == []
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(SCREENSHOT)
        assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert SCREENSHOT.stat().st_size > 20_000
    finally:
        server.terminate()
        server.wait(timeout=30)
        import shutil

        shutil.rmtree(profile, ignore_errors=True)
