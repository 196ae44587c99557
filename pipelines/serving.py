"""Idempotent bulk upserts into the PostgreSQL serving tables, shared by silver and gold.

``copy_upsert`` streams rows with ``COPY`` into a temporary staging table shaped like the
target, then moves them with one ``INSERT ... ON CONFLICT`` on the target's key: replaying
the same rows is harmless. ``mirror`` wraps that in one transaction per micro-batch and
retries an unreachable server with bounded, logged backoff.

Rows are either Python sequences or one ``pyarrow.Table`` with the spec's columns.

Value conventions of sequences (COPY text format): ``None`` -> NULL, ``Decimal``/int as
written, ``datetime`` aware or naive (naive = local time, which is what PySpark's ``collect``
returns for a TimestampType), ``bytes`` -> bytea, ``list`` -> a PostgreSQL array. A table
goes as COPY CSV written by Arrow (decimals exact, timestamps with their zone, NULL as an
unquoted empty field); its columns must be scalars.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeAlias, TypeVar

import psycopg2
import psycopg2.extensions
import pyarrow as pa
import pyarrow.csv
from psycopg2 import sql

from cryptoflow.core.db import connect
from cryptoflow.core.errors import ServiceError, first_line

log = logging.getLogger(__name__)

T = TypeVar("T")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class UpsertSpec:
    """Where rows go: the target table, its columns in row order, and its conflict key.

    ``update=False`` keeps the first row ever written for a key (``DO NOTHING``);
    ``update=True`` overwrites the non-key columns (``DO UPDATE``) where one of them
    differs, for rows that are recomputed, like gold windows: a row rewritten with the same
    values keeps its tuple, so its commit time is that of its last real change.
    ``final``: a boolean column; a row where it is false is live (an open kline) and is
    overwritten by the next row of its key, until a row where it is true, which is kept.
    """

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    update: bool = False
    final: str | None = None

    def __post_init__(self) -> None:
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"{self.table}: key columns {missing} are not among the columns")


def _array_item(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def copy_value(value: Any) -> str:
    """One value in PostgreSQL's COPY text format (escaped, ``\\N`` for NULL)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.astimezone(UTC)  # naive = local time, as PySpark returns
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        inner = ",".join("NULL" if v is None else _array_item(v) for v in value)
        return ("{" + inner + "}").translate(_ESCAPES)
    return str(value).translate(_ESCAPES)


def copy_text(rows: Iterable[Sequence[Any]]) -> io.StringIO:
    """Rows as a COPY text-format stream."""
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(copy_value(v) for v in row))
        buf.write("\n")
    buf.seek(0)
    return buf


Rows: TypeAlias = Sequence[Sequence[Any]] | pa.Table


def _copy_into(
    cur: psycopg2.extensions.cursor, into: sql.Composed, columns: Sequence[str], rows: Rows
) -> None:
    """COPY ``rows`` into ``into`` (``table (columns)``): CSV written by Arrow for a table,
    else the text format."""
    if isinstance(rows, pa.Table):
        buf = io.BytesIO()
        pyarrow.csv.write_csv(
            rows.select(list(columns)), buf, pyarrow.csv.WriteOptions(include_header=False)
        )
        buf.seek(0)
        statement = sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv)").format(into)
        cur.copy_expert(statement.as_string(cur), buf)
    else:
        statement = sql.SQL("COPY {} FROM STDIN").format(into)
        cur.copy_expert(statement.as_string(cur), copy_text(rows))


def stage_rows(cur: psycopg2.extensions.cursor, spec: UpsertSpec, rows: Rows) -> sql.Identifier:
    """COPY ``rows`` into the (emptied) temporary staging table of ``spec.table``, shaped
    like it; returns the staging table's name. Runs inside the caller's transaction."""
    target = sql.Identifier(spec.table)
    stage = sql.Identifier(f"_stage_{spec.table}")
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {target} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        ).format(stage=stage, target=target)
    )
    cur.execute(sql.SQL("TRUNCATE {}").format(stage))
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns)
    _copy_into(cur, sql.SQL("{} ({})").format(stage, cols), spec.columns, rows)
    if spec.table in DAY_PARTITIONED:
        ensure_day_partitions(cur, spec.table, stage)
    return stage


#: Serving tables partitioned by the UTC day of a time column (sql/090_day_partitions.sql).
DAY_PARTITIONED = {"raw_trades": "trade_time", "metrics": "window_start"}


def serving_key(table: str, key: tuple[str, ...]) -> tuple[str, ...]:
    """A serving table's unique key: ``key`` plus its partition column, which a partitioned
    table's unique keys must hold (a replayed row has the same time: still exactly once)."""
    column = DAY_PARTITIONED.get(table)
    return key if column is None or column in key else (*key, column)


def ensure_day_partitions(
    cur: psycopg2.extensions.cursor, table: str, stage: sql.Identifier
) -> int:
    """Create the missing day partitions of ``table`` for the days of the rows staged in
    ``stage``, before they are inserted, so that no row finds its day missing. Days that
    exist cost one catalogue look-up each; a missing one is created and attached by
    ``serving_ensure_days`` (SECURITY DEFINER: the pipeline's login has no other DDL right).
    Runs in the caller's transaction: a rollback takes the new partitions with it."""
    cur.execute(
        sql.SQL(
            "SELECT serving_ensure_days(%s::regclass, ARRAY("
            "SELECT DISTINCT ({col} AT TIME ZONE 'UTC')::date FROM {stage}))"
        ).format(col=sql.Identifier(DAY_PARTITIONED[table]), stage=stage),
        (table,),
    )
    made = cur.fetchone()[0]
    if made:
        log.info("serving partitions created table=%s days=%d", table, made)
    return made


def upsert_statement(spec: UpsertSpec, stage: sql.Identifier) -> sql.Composed:
    """``INSERT INTO spec.table SELECT ... FROM stage ON CONFLICT (key) ...`` (module doc); the
    key of a day-partitioned table holds its partition column (``serving_key``)."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns)
    key = serving_key(spec.table, spec.key)
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in key)
    if spec.update or spec.final:
        others = [c for c in spec.columns if c not in key]
        action = sql.SQL("DO UPDATE SET {sets} WHERE ({mine}) IS DISTINCT FROM ({theirs})").format(
            sets=sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others
            ),
            mine=sql.SQL(", ").join(sql.Identifier(spec.table, c) for c in others),
            theirs=sql.SQL(", ").join(sql.Identifier("excluded", c) for c in others),
        )
        if spec.final and not spec.update:
            action += sql.SQL(" AND NOT {}").format(sql.Identifier(spec.table, spec.final))
    else:
        action = sql.SQL("DO NOTHING")
    return sql.SQL(
        "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({keys}) {action}"
    ).format(target=sql.Identifier(spec.table), cols=cols, stage=stage, keys=keys, action=action)


def copy_upsert(cur: psycopg2.extensions.cursor, spec: UpsertSpec, rows: Rows) -> int:
    """COPY ``rows`` into a temp staging table, then upsert into ``spec.table``.

    Runs inside the caller's transaction. Returns how many rows were inserted or changed.
    """
    cur.execute(upsert_statement(spec, stage_rows(cur, spec, rows)))
    return cur.rowcount


def mirror(
    dsn: str,
    writes: Sequence[tuple[UpsertSpec, Rows]],
    retry_seconds: float = 60.0,
    what: str = "batch",
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
    """Upsert every (spec, rows) pair in ONE transaction (``in_transaction``). Returns rows
    changed per table."""

    def upsert_all(cur: psycopg2.extensions.cursor) -> dict[str, int]:
        return {spec.table: copy_upsert(cur, spec, rows) for spec, rows in writes if len(rows)}

    return in_transaction(dsn, upsert_all, retry_seconds, what, sleep)


def in_transaction(
    dsn: str,
    work: Callable[[psycopg2.extensions.cursor], T],
    retry_seconds: float = 60.0,
    what: str = "batch",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``work(cursor)`` in ONE transaction, retrying connection failures.

    Backoff starts at 0.5 s and doubles up to 8 s; after ``retry_seconds`` the last error is
    raised as ``ServiceError`` (the streaming query then fails and a restart replays the
    batch from its checkpoint; idempotent work makes that replay harmless).
    """
    deadline = time.monotonic() + retry_seconds
    delay, attempt = 0.5, 1
    while True:
        try:
            return _once(dsn, work)
        except (ServiceError, psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            reason = first_line(e)
            if time.monotonic() + delay > deadline:
                raise ServiceError(
                    f"writing {what} to PostgreSQL failed after {attempt} attempts "
                    f"({reason}); the job stops and resumes from its checkpoint on restart"
                ) from e
            log.warning(
                "postgres unavailable %s attempt=%d retry_in=%.1fs reason=%s",
                what,
                attempt,
                delay,
                reason,
            )
            sleep(delay)
            delay, attempt = min(delay * 2, 8.0), attempt + 1


def _once(dsn: str, work: Callable[[psycopg2.extensions.cursor], T]) -> T:
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            return work(cur)
    finally:
        conn.close()
