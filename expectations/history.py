"""PostgreSQL ``dq_results``: one row per validation run (sql/030_dq_results.sql)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import psycopg2

from cryptoflow.core import db
from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ServiceError
from cryptoflow.core.services.postgres import pipeline_dsn
from expectations.results import ValidationRun


def store_run(settings: Settings, run: ValidationRun) -> None:
    """Insert ``run`` through the pipeline's writer login."""
    conn = db.connect(pipeline_dsn(settings))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """INSERT INTO dq_results (run_id, suite, table_name, delta_version, as_of,
                       success, rows_validated, expectations_evaluated, expectations_failed,
                       results, docs_index, started_at, duration_ms)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)""",
                (
                    run.run_id,
                    run.suite,
                    run.table,
                    run.delta_version,
                    run.as_of,
                    run.success,
                    run.rows,
                    run.evaluated,
                    len(run.failed),
                    json.dumps([o.as_dict() for o in run.outcomes]),
                    run.docs_index,
                    run.started_at,
                    run.duration_ms,
                ),
            )
    except psycopg2.Error as e:
        raise ServiceError(f"storing the validation run in dq_results failed: {e}".strip()) from e
    finally:
        conn.close()


@dataclass(frozen=True)
class StoredRun:
    started_at: datetime
    table: str
    suite: str
    delta_version: int
    success: bool
    rows: int
    evaluated: int
    failed: int
    failed_rules: list[str]
    duration_ms: int


def recent_runs(dsn: str, limit: int = 20, table: str | None = None) -> list[StoredRun]:
    """The newest ``limit`` runs (optionally of one table), newest first."""
    conn = db.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """SELECT started_at, table_name, suite, delta_version, success, rows_validated,
                          expectations_evaluated, expectations_failed,
                          ARRAY(SELECT r->>'rule' FROM jsonb_array_elements(results) r
                                WHERE NOT (r->>'success')::boolean),
                          duration_ms
                   FROM dq_results WHERE %(table)s::text IS NULL OR table_name = %(table)s
                   ORDER BY started_at DESC LIMIT %(limit)s""",
                {"table": table, "limit": limit},
            )
            return [StoredRun(*row) for row in cur.fetchall()]
    except psycopg2.Error as e:
        raise ServiceError(f"reading dq_results failed: {e}".strip()) from e
    finally:
        conn.close()
