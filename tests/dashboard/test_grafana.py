"""Every SQL query in the Grafana dashboard files runs, as Grafana's read-only login, against
the real schema filled by a short simulated pipeline run, and returns rows."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cryptoflow.core.db import connect
from cryptoflow.core.services import postgres

DASHBOARDS = Path(__file__).resolve().parents[2] / "docker" / "grafana" / "dashboards"
BUCKET_S = 5  # what $__interval becomes in these tests


def grafana_queries() -> list[tuple[str, str]]:
    """(label, sql) of every panel target and template variable in the dashboard files."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                found.append((f"{path.stem}:variable {var['name']}", var["query"]))
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                found.append((f"{path.stem}:{panel['title']}:{t['refId']}", t["rawSql"]))
    return found


SERVING_TABLES = ("raw_trades", "metrics", "quarantine", "pipeline_batches", "dq_results",
                  "reconciliation")  # fmt: skip


#: The functions of sql/091_latest_rows.sql that panels call, by the table they read.
SERVING_FUNCTIONS = {"latest_trades": "raw_trades", "newest_trade_time": "raw_trades",
                     "latest_metrics": "metrics", "newest_window_start": "metrics",
                     "newest_window_end": "metrics", "metrics_symbols": "metrics",
                     "metrics_window_seconds": "metrics"}  # fmt: skip


def tables_of(sql: str) -> set[str]:
    """The serving tables a query reads, directly or through a function."""
    found = {t for t in SERVING_TABLES if re.search(rf"\b(?:FROM|JOIN)\s+{t}\b", sql, re.I)}
    return found | {t for f, t in SERVING_FUNCTIONS.items() if re.search(rf"\b{f}\s*\(", sql)}


JOBS = ("trades",)  # pipelines.job.QUERY: the one streaming query


def expand(sql: str, start: datetime, end: datetime, symbols: list[str], window_s: int) -> str:
    """Expand Grafana's macros and variables the way its PostgreSQL data source does."""
    group = rf"floor(extract(epoch from \1)/{BUCKET_S})*{BUCKET_S}"
    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),[^)]*\)", group + ' AS "time"', sql)
    sql = re.sub(r"\$__timeGroup\(([^,]+),[^)]*\)", group, sql)
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        rf"\1 BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        sql,
    )
    sql = sql.replace("$__timeFrom()", f"'{start.isoformat()}'")
    sql = sql.replace("$__timeTo()", f"'{end.isoformat()}'")
    sql = sql.replace("$symbol", ",".join(f"'{s}'" for s in symbols))
    sql = sql.replace("$window", str(window_s))
    sql = sql.replace("$job", ",".join(f"'{j}'" for j in JOBS))
    assert "$" not in sql, f"unexpanded Grafana macro or variable in: {sql}"
    return sql


def test_dashboard_files_are_provisionable():
    boards = sorted(DASHBOARDS.glob("*.json"))
    assert [b.name for b in boards] == ["cryptoflow-market.json", "cryptoflow-pipeline.json"]
    uids = set()
    for path in boards:
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "cryptoflow-pg"
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
    assert len(uids) == 2
    labels = " ".join(label for label, _ in grafana_queries())
    for view in ("Price and VWAP", "Volume", "Buy vs sell", "intensity", "Latency chain",
                 "Quarantined", "Batch duration", "Kafka lag", "Validation runs",
                 "Reconciliation"):  # fmt: skip
        assert view in labels


def test_macro_expansion_matches_grafana():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    sql = expand(
        "SELECT $__timeGroupAlias(t, $__interval), 1 FROM x WHERE $__timeFilter(t) "
        "AND s IN ($symbol) AND w = $window",
        start, start + timedelta(minutes=1), ["A", "B"], 5,
    )  # fmt: skip
    assert sql == (
        'SELECT floor(extract(epoch from t)/5)*5 AS "time", 1 FROM x WHERE t BETWEEN '
        "'2026-01-01T00:00:00+00:00' AND '2026-01-01T00:01:00+00:00' AND s IN ('A','B') AND w = 5"
    )
    assert tables_of("SELECT 1 FROM metrics m CROSS JOIN LATERAL unnest(x) JOIN quarantine q") == {
        "metrics", "quarantine"
    }  # fmt: skip
    assert tables_of("SELECT now() - newest_trade_time(ARRAY['A'])") == {"raw_trades"}


@pytest.mark.integration
def test_every_grafana_query_returns_rows_as_the_read_only_login(settings, pipeline_run):
    end = datetime.now(UTC) + timedelta(seconds=5)
    start = end - timedelta(minutes=15)
    queries = grafana_queries()
    assert len(queries) >= 10
    conn = connect(postgres.reader_dsn(settings))
    conn.set_session(readonly=True, autocommit=True)
    missing: dict[str, set[str]] = {}
    try:
        with conn.cursor() as cur:
            for label, raw in queries:
                needed = tables_of(raw)
                assert needed, f"{label} reads none of the serving tables"
                cur.execute(
                    "SELECT t FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NULL",
                    (sorted(needed),),
                )
                absent = {r[0] for r in cur.fetchall()}
                if absent:
                    missing[label] = absent
                    continue
                sql = expand(raw, start, end, settings.symbols, settings.window_seconds)
                cur.execute(sql)
                rows = cur.fetchall()
                assert rows, f"{label} returned no rows"
                assert any(v is not None for row in rows for v in row), f"{label}: all NULL"
    finally:
        conn.close()
    # Only panels over tables another part of the pipeline has not created yet may be left.
    assert not missing, f"queries over tables the schema lacks: {missing}"
