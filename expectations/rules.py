"""Row-level rules for the streaming hot path, derived from the GE suites (the one definition),
read without importing GE (``read_suite_plain``).

``trade_rules(settings)`` gives silver's rules as Spark SQL booleans with their DLT-style
action; ``unique_key_rule(settings)`` names the (symbol, trade_id) uniqueness expectation.
The silver job evaluates ``expression`` per row: TRUE passes, FALSE (or NULL) fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptoflow.core.config import Settings
from expectations.params import suite_parameters
from expectations.suites import SuiteError, action_of, read_suite_plain, rule_of
from expectations.translate import TABLE_LEVEL, to_sql

TRADES_SUITE = "silver_trades"
METRICS_SUITE = "gold_metrics"


@dataclass(frozen=True)
class RowRule:
    name: str  # the expectation's name as reported in quarantine, e.g. "price_positive"
    expression: str  # Spark SQL boolean; TRUE = row passes; NULL counts as failed
    action: str  # "warn" (keep + count) | "drop" (to quarantine) | "fail" (stop the job)


def row_rules(settings: Settings, suite_name: str) -> list[RowRule]:
    """Every row-level expectation of ``suite_name`` as a ``RowRule``, in suite order."""
    params = suite_parameters(settings)
    return [
        RowRule(rule_of(e), to_sql(e, params), action_of(e))
        for e in read_suite_plain(suite_name).expectations
        if e.expectation_type not in TABLE_LEVEL
    ]


def trade_rules(settings: Settings) -> list[RowRule]:
    """Silver's row-level rules (parse-level ones included), from ``silver_trades.json``."""
    return row_rules(settings, TRADES_SUITE)


def metrics_rules(settings: Settings) -> list[RowRule]:
    """Gold's row-level rules, from ``gold_metrics.json``."""
    return row_rules(settings, METRICS_SUITE)


def unique_key_rule(settings: Settings, suite_name: str = TRADES_SUITE) -> RowRule:
    """The key uniqueness expectation of ``suite_name`` (silver trades: (symbol, trade_id)):
    its name and action for duplicates.

    ``expression`` is unused (uniqueness spans rows and batches); it is ``TRUE``.
    """
    for e in read_suite_plain(suite_name).expectations:
        if e.expectation_type == "expect_compound_columns_to_be_unique":
            return RowRule(rule_of(e), "TRUE", action_of(e))
    raise SuiteError(f"suite {suite_name!r} has no expect_compound_columns_to_be_unique")
