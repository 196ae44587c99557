"""Suite parameters: the configurable parts of the suites, filled from settings at load time.

A suite file refers to a parameter either GE's way, as a whole kwarg value
``{"$PARAMETER": "max_price"}``, or as ``${max_price}`` inside an ``unexpected_rows_query``.
Each parameter has a Python ``value`` (what a Great Expectations validation run receives) and
a Spark SQL ``sql`` text (what the hot-path expressions embed). "Not in the future" is relative
to the row's ``spark_time`` (the micro-batch's processing time) in SQL, so a long-running stream
never compares against a stale instant and a replayed batch decides the same way; in a
validation run it is the instant of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ConfigError
from pipelines.gold.transform import window_lengths


@dataclass(frozen=True)
class Param:
    """One suite parameter: its value for GE and its Spark SQL text for the hot path."""

    value: Any
    sql: str


def sql_literal(value: Any) -> str:
    """A Spark SQL literal for a JSON-ish Python value (decimals stay exact, never doubles)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        text = format(Decimal(str(value)), "f")
        return f"{text}BD" if "." not in text else text
    if isinstance(value, datetime):
        stamp = value.astimezone(UTC) if value.tzinfo else value
        return f"TIMESTAMP'{stamp.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise TypeError(f"no Spark SQL literal for {type(value).__name__} {value!r}")


def _min_time(s: Settings) -> datetime:
    try:
        parsed = datetime.fromisoformat(s.dq_min_trade_time)
    except ValueError as e:
        raise ConfigError(
            f"CRYPTOFLOW_DQ_MIN_TRADE_TIME={s.dq_min_trade_time!r} is not an ISO date like "
            "2017-01-01"
        ) from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def suite_parameters(s: Settings, now: datetime | None = None) -> dict[str, Param]:
    """Every parameter the suites may reference, from ``s``; ``now`` fixes GE's time bounds."""
    for name in ("dq_future_tolerance_seconds", "dq_event_before_trade_ms", "dq_max_latency_ms"):
        if getattr(s, name) < 0:
            raise ConfigError(f"CRYPTOFLOW_{name.upper()} must not be negative")
    now = now or datetime.now(UTC)
    future = s.dq_future_tolerance_seconds
    min_time = _min_time(s)
    lengths = list(window_lengths(s.window_seconds))
    return {
        "symbols": Param(list(s.symbols), ", ".join(sql_literal(x) for x in s.symbols)),
        "max_price": Param(s.dq_max_price, sql_literal(s.dq_max_price)),
        "max_quantity": Param(s.dq_max_quantity, sql_literal(s.dq_max_quantity)),
        "min_trade_time": Param(min_time, sql_literal(min_time)),
        "max_trade_time": Param(
            now + timedelta(seconds=future),
            # The batch's processing time: a replayed batch decides the same way.
            f"spark_time + make_dt_interval(0, 0, 0, {future})",
        ),
        "max_latency_ms": Param(s.dq_max_latency_ms, sql_literal(s.dq_max_latency_ms)),
        "event_before_trade_ms": Param(
            s.dq_event_before_trade_ms, sql_literal(s.dq_event_before_trade_ms)
        ),
        "window_lengths": Param(lengths, ", ".join(str(n) for n in lengths)),
    }
