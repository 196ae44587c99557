"""The README's, the live page's and Grafana's queries on the day-partitioned raw_trades and
metrics open the last days' partitions only, whatever the history kept (docs/serving.md): a
query that PostgreSQL cannot prune while planning plans and locks every day partition, so its
cost grows with the days kept. Checked by the locks each query leaves in its transaction."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from cryptoflow.core.db import connect
from cryptoflow.core.services import postgres
from cryptoflow.dashboard.data import Window
from cryptoflow.dashboard.queries import FRESHNESS, VIEWS
from tests.dashboard.test_grafana import expand, grafana_queries, tables_of

README = Path(__file__).resolve().parents[2] / "README.md"
OLD_DAY = date(2019, 5, 1)  # no other test uses it; its partitions stay empty


def readme_queries() -> list[str]:
    """The README's psql examples (``cryptoflow psql -c '...'``, ``crypto=> ...;``)."""
    text = README.read_text()
    return re.findall(r"cryptoflow psql -c '([^']+)'", text) + re.findall(
        r"^crypto=> (.+?);\s*$", text, re.M
    )


def test_the_readme_has_its_psql_examples():
    assert len(readme_queries()) == 2
    assert all(tables_of(q) & {"raw_trades", "metrics"} for q in readme_queries())


@pytest.mark.integration
def test_every_query_opens_only_the_last_days_partitions(settings, pipeline_run):
    conn = connect(postgres.admin_dsn(settings))
    try:
        with conn, conn.cursor() as cur:  # an old day in both tables, as months of history
            for table in ("raw_trades", "metrics"):
                cur.execute("SELECT serving_ensure_days(%s, %s)", (table, [OLD_DAY]))
    finally:
        conn.close()
    end = datetime.now(UTC) + timedelta(seconds=5)
    params = Window(15, settings.window_seconds).params()
    queries = [(f"readme: {q}", q, {}) for q in readme_queries()]
    queries += [("page: freshness", FRESHNESS, params)]
    queries += [(f"page: {v.name}", v.sql, params) for v in VIEWS]
    queries += [
        (label, expand(raw, end - timedelta(minutes=15), end, settings.symbols,
                       settings.window_seconds), {})
        for label, raw in grafana_queries()
    ]  # fmt: skip
    first = datetime.now(UTC).date() - timedelta(days=2)
    opened_old = {}
    conn = connect(postgres.reader_dsn(settings))
    try:
        with conn.cursor() as cur:
            for label, sql, p in queries:
                if not tables_of(sql) & {"raw_trades", "metrics"}:
                    continue
                cur.execute(sql, p or None)
                assert cur.fetchall(), f"{label} returned no rows"
                cur.execute(
                    "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE l.pid = pg_backend_pid() AND c.relkind = 'r' AND c.relispartition"
                )
                days = {datetime.strptime(r[0][-8:], "%Y%m%d").date() for r in cur.fetchall()}
                assert days, f"{label} opened no partition"
                if min(days) < first:
                    opened_old[label] = sorted(days)[:3]
                conn.rollback()
    finally:
        conn.close()
    assert not opened_old, f"queries that open old day partitions: {opened_old}"
