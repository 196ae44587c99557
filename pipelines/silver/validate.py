"""Expectations as Spark expressions in the hot path: each row gets the names of every rule
it failed and what that means for it (keep, quarantine, or stop the job).

Rules come from ``expectations.rules.trade_rules`` (objects with ``name``, ``expression``,
``action``); an expression that is FALSE or NULL fails the row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from cryptoflow.core.errors import ConfigError, first_line
from cryptoflow.core.streams import KINDS, StreamKind
from pipelines.silver.transform import REQUIRED_COLUMNS, parse_frames

ACTIONS = ("warn", "drop", "fail")
#: Reason given when a row cannot be stored in silver but no configured rule caught it.
UNSTORABLE = "silver_schema"


class Rule(Protocol):
    """A row-level rule, e.g. ``expectations.rules.RowRule`` (read-only: a frozen dataclass)."""

    @property
    def name(self) -> str: ...
    @property
    def expression(self) -> str: ...
    @property
    def action(self) -> str: ...


def check_rules(rules: Sequence[Rule], sample: DataFrame) -> None:
    """Fail early, naming the rule, on an unknown action, a repeated name or bad SQL."""
    seen: set[str] = set()
    for r in rules:
        if r.action not in ACTIONS:
            raise ConfigError(f"rule {r.name}: action {r.action!r} is not one of {ACTIONS}")
        if r.name in seen:
            raise ConfigError(f"rule {r.name} is defined twice: rule names must be unique")
        seen.add(r.name)
        try:
            sample.select(F.expr(r.expression)).schema  # noqa: B018 (analysis only)
        except AnalysisException as e:
            first = first_line(e)
            raise ConfigError(
                f"rule {r.name}: expression {r.expression!r} is invalid: {first}"
            ) from e


def _fails(rule: Rule) -> Column:
    return ~F.coalesce(F.expr(rule.expression).cast("boolean"), F.lit(False))


#: Rules per stream kind name (``apply_rules``); a plain sequence applies to every row.
RulesByKind = Mapping[str, Sequence[Rule]]


def apply_rules(parsed: DataFrame, rules: Sequence[Rule] | RulesByKind) -> DataFrame:
    """Add ``failed_expectations`` (array of rule names), ``dropped`` and ``fail_rule``.

    ``rules`` maps a stream kind's name to its rules, each applied to the rows of that kind
    (``kind``); a plain sequence applies to every row, as trade rules.
    ``dropped`` is true when a drop rule failed or the row could not be stored in silver
    (NULL in one of its kind's required columns or a parse error: then ``silver_schema`` is
    named unless a drop rule already was).
    ``fail_rule`` is the first failed rule whose action is fail, else NULL.
    """
    by_kind: dict[str | None, Sequence[Rule]] = {None: rules} if isinstance(rules, Sequence) else {}
    if isinstance(rules, Mapping):
        by_kind.update(rules)
    failing: list[Column] = []
    drop_names: set[str] = set()
    fail_names: set[str] = set()
    unstorable = F.col("parse_error").isNotNull()
    for name, kind_rules in by_kind.items():
        mine = F.lit(True) if name is None else F.col("kind") == name
        failing += [F.when(mine & _fails(r), F.lit(r.name)) for r in kind_rules]
        drop_names |= {r.name for r in kind_rules if r.action == "drop"}
        fail_names |= {r.name for r in kind_rules if r.action == "fail"}
        missing = F.lit(False)
        for c in KINDS[name].required if name is not None else REQUIRED_COLUMNS:
            missing = missing | F.col(c).isNull()
        unstorable = unstorable | (mine & missing)
    names = F.filter(
        F.array(*failing) if failing else F.array().cast("array<string>"),
        lambda x: x.isNotNull(),
    )
    dropped_by_rule = F.coalesce(
        F.arrays_overlap(F.col("failed_expectations"), _names(sorted(drop_names))), F.lit(False)
    )
    with_names = parsed.withColumn("failed_expectations", names)
    return with_names.withColumns(
        {
            "dropped": dropped_by_rule | unstorable,
            "fail_rule": F.get(
                F.filter(
                    F.col("failed_expectations"),
                    lambda x: F.array_contains(_names(sorted(fail_names)), x),
                ),
                0,
            ),
            "failed_expectations": F.when(
                unstorable & ~dropped_by_rule,
                F.concat(F.col("failed_expectations"), F.array(F.lit(UNSTORABLE))),
            ).otherwise(F.col("failed_expectations")),
        }
    )


def _names(names: Sequence[str]) -> Column:
    return F.array(*[F.lit(n) for n in names]) if names else F.array().cast("array<string>")


def validated(
    bronze: DataFrame,
    rules: Sequence[Rule] | RulesByKind,
    kinds: Mapping[str, StreamKind] | None = None,
) -> DataFrame:
    """Bronze rows parsed as the kind of their topic (``kinds``: topic -> kind; default
    every row a trade) and validated by that kind's ``rules``: what the pipeline's batch
    function receives. Built on the streaming DataFrame, so the plan is analysed once per
    query start."""
    parsed = parse_frames(bronze, kinds=kinds)
    for kind_rules in rules.values() if isinstance(rules, Mapping) else [rules]:
        check_rules(kind_rules, parsed)
    return apply_rules(parsed, rules)
