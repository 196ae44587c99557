"""``pipelines.serving`` against the real PostgreSQL: an Arrow table (COPY CSV) and Python
rows (COPY text) upsert the same values, edge cases included."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
from psycopg2 import sql

from cryptoflow.core.db import connect
from cryptoflow.core.services.postgres import admin_dsn
from pipelines.serving import UpsertSpec, mirror

COLUMNS = ("k", "price", "at", "flag", "n", "note")
ROWS = [
    ("zero", Decimal("0E-8"), datetime(2026, 11, 26, 8, 0, 0, 123000, tzinfo=UTC), True, None,
     'comma, "quote"\nnewline\\backslash'),
    ("tiny", Decimal("0.00000001"), datetime(2026, 1, 1, tzinfo=UTC), False, 5, ""),
    ("big", Decimal("9999999999.99999999"), None, None, -(2**62), None),
]  # fmt: skip
SCHEMA = pa.schema(
    [
        ("k", pa.string()),
        ("price", pa.decimal128(18, 8)),
        ("at", pa.timestamp("us", tz="UTC")),
        ("flag", pa.bool_()),
        ("n", pa.int64()),
        ("note", pa.string()),
    ]
)


def _table(conn, name: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "CREATE TABLE {} (k text PRIMARY KEY, price numeric(18,8), at timestamptz(3), "
                "flag boolean, n bigint, note text)"
            ).format(sql.Identifier(name))
        )


def test_arrow_and_python_rows_upsert_the_same_values(settings, unique):
    dsn = admin_dsn(settings)
    arrow_name, rows_name = f"serving_arrow_{unique}", f"serving_rows_{unique}"
    conn = connect(dsn)
    conn.autocommit = True
    try:
        _table(conn, arrow_name)
        _table(conn, rows_name)
        table = pa.Table.from_pylist([dict(zip(COLUMNS, r, strict=True)) for r in ROWS], SCHEMA)
        arrow_spec = UpsertSpec(arrow_name, COLUMNS, ("k",))
        rows_spec = UpsertSpec(rows_name, COLUMNS, ("k",))
        assert mirror(dsn, [(arrow_spec, table), (rows_spec, ROWS)]) == {
            arrow_name: 3,
            rows_name: 3,
        }
        # a replay changes nothing; an empty table is skipped
        assert mirror(dsn, [(arrow_spec, table), (rows_spec, ROWS)]) == {
            arrow_name: 0,
            rows_name: 0,
        }
        assert mirror(dsn, [(arrow_spec, table.slice(0, 0))]) == {}

        def read(name: str) -> list[tuple]:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("SELECT * FROM {} ORDER BY k").format(sql.Identifier(name)))
                return cur.fetchall()

        stored = read(arrow_name)
        assert stored == read(rows_name)
        assert stored == sorted(ROWS, key=lambda r: r[0])
        assert [r[5] for r in stored] == [
            None,
            "",
            'comma, "quote"\nnewline\\backslash',
        ]  # big, tiny, zero
    finally:
        with conn.cursor() as cur:
            for name in (arrow_name, rows_name):
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.close()


def test_update_rewrites_only_rows_that_differ(settings, unique):
    """update=True: an identical row keeps its tuple (xmin, so its commit time); a changed
    column, NULL included, is written."""
    dsn = admin_dsn(settings)
    name = f"serving_update_{unique}"
    conn = connect(dsn)
    conn.autocommit = True
    spec = UpsertSpec(name, COLUMNS, ("k",), update=True)

    def xmins() -> dict[str, str]:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT k, xmin::text FROM {}").format(sql.Identifier(name)))
            return dict(cur.fetchall())

    try:
        _table(conn, name)
        assert mirror(dsn, [(spec, ROWS)]) == {name: 3}
        before = xmins()
        assert mirror(dsn, [(spec, ROWS)]) == {name: 0}
        assert xmins() == before
        changed = [ROWS[0], (*ROWS[1][:4], None, ROWS[1][5]), (*ROWS[2][:5], "now set")]
        assert mirror(dsn, [(spec, changed)]) == {name: 2}
        after = xmins()
        assert after["zero"] == before["zero"]
        assert after["tiny"] != before["tiny"] and after["big"] != before["big"]
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT n, note FROM {} WHERE k IN ('tiny', 'big') ORDER BY k")
                        .format(sql.Identifier(name)))  # fmt: skip
            assert cur.fetchall() == [(-(2**62), "now set"), (None, "")]
    finally:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.close()
