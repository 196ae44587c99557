"""Great Expectations expectation -> Spark SQL boolean: TRUE when the row passes.

The expressions follow GE's own row semantics, so the hot path and a GE validation agree:
column-map expectations skip NULLs (``not_be_null`` is what catches them), a column pair is
skipped per ``ignore_row_if``, and ``unexpected_rows_expectation`` fails exactly the rows its
``WHERE`` clause selects. The expressions never evaluate to NULL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from expectations.params import Param, sql_literal
from expectations.suites import PlainExpectation, SuiteError, fill_text, param_name

if TYPE_CHECKING:  # GE's import takes seconds: the hot path reads suites without it
    from great_expectations.expectations.expectation import Expectation

_QUERY = re.compile(
    r"^\s*SELECT\s+\*\s+FROM\s+\{batch\}\s+WHERE\s+(?P<cond>.+?)\s*;?\s*$", re.I | re.S
)


def ident(column: str) -> str:
    """A Spark SQL identifier, back-quoted."""
    return "`" + column.replace("`", "``") + "`"


class _Ctx:
    """Kwarg access that turns parameters into SQL text."""

    def __init__(self, exp: Expectation | PlainExpectation, params: dict[str, Param]):
        self.kwargs: dict[str, Any] = dict(exp.configuration.kwargs)
        self.params = params
        self.type = exp.expectation_type

    def raw(self, key: str, default: Any = None) -> Any:
        return self.kwargs.get(key, default)

    def sql(self, key: str) -> str | None:
        """SQL text of kwarg ``key`` (a literal or a parameter), or None when absent."""
        value = self.kwargs.get(key)
        if value is None:
            return None
        pname = param_name(value)
        if pname is not None:
            if pname not in self.params:
                raise SuiteError(f"{self.type}: unknown suite parameter {pname!r} in {key}")
            return self.params[pname].sql
        return sql_literal(value)

    def sql_list(self, key: str) -> str:
        value = self.kwargs.get(key)
        if param_name(value) is not None:
            return self.sql(key) or ""
        if not isinstance(value, list | tuple | set) or not value:
            raise SuiteError(f"{self.type}: {key} must be a non-empty list")
        return ", ".join(sql_literal(v) for v in value)

    def column(self, key: str = "column") -> str:
        if not self.kwargs.get(key):
            raise SuiteError(f"{self.type}: kwarg {key!r} is missing")
        return ident(self.kwargs[key])


def _nullable(col: str, cond: str) -> str:
    return f"({col} IS NULL OR {cond})"


def _not_null(c: _Ctx) -> str:
    return f"({c.column()} IS NOT NULL)"


def _null(c: _Ctx) -> str:
    return f"({c.column()} IS NULL)"


def _between(c: _Ctx) -> str:
    col, lo, hi = c.column(), c.sql("min_value"), c.sql("max_value")
    if lo is None and hi is None:
        raise SuiteError(f"{c.type} on {col}: give min_value, max_value or both")
    parts = []
    if lo is not None:
        parts.append(f"{col} {'>' if c.raw('strict_min') else '>='} {lo}")
    if hi is not None:
        parts.append(f"{col} {'<' if c.raw('strict_max') else '<='} {hi}")
    return _nullable(col, f"coalesce({' AND '.join(parts)}, FALSE)")


def _in_set(c: _Ctx) -> str:
    col = c.column()
    return _nullable(col, f"{col} IN ({c.sql_list('value_set')})")


def _not_in_set(c: _Ctx) -> str:
    col = c.column()
    return _nullable(col, f"{col} NOT IN ({c.sql_list('value_set')})")


def _regex(c: _Ctx) -> str:
    col = c.column()
    return _nullable(col, f"{col} RLIKE {c.sql('regex')}")


def _a_greater_than_b(c: _Ctx) -> str:
    a, b = c.column("column_A"), c.column("column_B")
    op = ">=" if c.raw("or_equal") else ">"
    cond = f"coalesce({a} {op} {b}, FALSE)"
    ignore = c.raw("ignore_row_if", "both_values_are_missing")
    if ignore == "both_values_are_missing":
        return f"(({a} IS NULL AND {b} IS NULL) OR {cond})"
    if ignore == "either_value_is_missing":
        return f"({a} IS NULL OR {b} IS NULL OR {cond})"
    if ignore == "neither":
        return f"({cond})"
    raise SuiteError(f"{c.type}: unsupported ignore_row_if {ignore!r}")


def _unexpected_rows(c: _Ctx) -> str:
    query = fill_text(str(c.raw("unexpected_rows_query", "")), c.params)
    m = _QUERY.match(query)
    if not m:
        raise SuiteError(
            "unexpected_rows_query must read 'SELECT * FROM {batch} WHERE <condition>' to "
            f"run in the hot path, got {query!r}"
        )
    return f"(NOT coalesce(({m.group('cond')}), FALSE))"


TRANSLATORS: dict[str, Callable[[_Ctx], str]] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_null": _null,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_match_regex": _regex,
    "expect_column_pair_values_a_to_be_greater_than_b": _a_greater_than_b,
    "unexpected_rows_expectation": _unexpected_rows,
}

#: Expectations over the whole table, not one row: the hot path handles them itself.
TABLE_LEVEL = {"expect_compound_columns_to_be_unique"}


def to_sql(expectation: Expectation | PlainExpectation, params: dict[str, Param]) -> str:
    """The Spark SQL boolean that is TRUE for a row ``expectation`` accepts."""
    kind = expectation.expectation_type
    if kind not in TRANSLATORS:
        raise SuiteError(
            f"expectation type {kind!r} has no hot-path translation; supported: "
            + ", ".join(sorted(TRANSLATORS))
        )
    return TRANSLATORS[kind](_Ctx(expectation, params))
