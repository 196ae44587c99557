"""PostgreSQL access: connections and the numbered migrations in ``sql/``."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.extensions

from cryptoflow.core.config import mask_dsn
from cryptoflow.core.errors import ServiceError, first_line

log = logging.getLogger(__name__)
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# A fixed key so that two processes applying migrations at once take turns.
_LOCK_KEY = 0x63F10


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def connect(dsn: str, **kw) -> psycopg2.extensions.connection:
    """Open a connection, turning failures into one actionable line (password masked)."""
    try:
        return psycopg2.connect(dsn, connect_timeout=10, **kw)
    except psycopg2.OperationalError as e:
        reason = first_line(e)
        raise ServiceError(
            f"PostgreSQL at {mask_dsn(dsn)} is unreachable ({reason}): start it with "
            "`cryptoflow services up` or check CRYPTOFLOW_POSTGRES_DSN"
        ) from e


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The numbered migrations, in order; a malformed name or repeated number is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ServiceError(f"{path}: migration names look like 001_create_things.sql")
        version = int(m.group(1))
        if version in found:
            raise ServiceError(f"{path}: migration number {version} is used twice")
        found[version] = Migration(version, path.stem, path.read_text())
    return [found[v] for v in sorted(found)]


def apply_migrations(dsn: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction. Returns their names."""
    applied: list[str] = []
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            cur.execute(
                """CREATE TABLE IF NOT EXISTS cryptoflow_migrations (
                       version integer PRIMARY KEY, name text NOT NULL,
                       checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"""
            )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT version, checksum FROM cryptoflow_migrations")
                done = dict(cur.fetchall())
            conn.commit()
            for mig in migrations(sql_dir):
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        raise ServiceError(
                            f"migration {mig.name} changed after it was applied: add a new "
                            "numbered migration instead of editing an applied one"
                        )
                    continue
                with conn, conn.cursor() as cur:
                    cur.execute(mig.sql)
                    cur.execute(
                        "INSERT INTO cryptoflow_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (mig.version, mig.name, mig.checksum),
                    )
                applied.append(mig.name)
                log.info("migration applied name=%s", mig.name)
        finally:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg2.Error as e:
        raise ServiceError(f"applying migrations failed: {str(e).strip()}") from e
    finally:
        conn.close()
    return applied


def table_columns(dsn: str, table: str) -> list[tuple[str, str]]:
    """(column, data type) of ``table`` in ordinal order."""
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        rows = cur.fetchall()
    conn.close()
    return rows
