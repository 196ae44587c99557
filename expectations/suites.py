"""The versioned Great Expectations suites in ``expectations/suites/*.json``, loaded with GE.

``read_suite`` gives the suite as written (parameters unresolved), parsed by GE;
``read_suite_plain`` the same expectations without importing GE (the hot path's rules: GE's
import costs seconds of every start); ``resolved_suite`` fills the parameters with values for
a GE validation run. Every expectation carries ``meta.rule`` (its stable name, unique in the
suite) and ``meta.action`` (warn | drop | fail, Delta Live Tables' meaning); a suite file that
lacks them is rejected with the reason.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptoflow.core.errors import CryptoflowError
from expectations.params import Param

if TYPE_CHECKING:  # imported where used: GE's import takes seconds
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation import Expectation

SUITES_DIR = Path(__file__).resolve().parent / "suites"
ACTIONS = ("warn", "drop", "fail")
_TEXT_PARAM = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")


class SuiteError(CryptoflowError):
    """A suite file is missing, malformed, or refers to an unknown parameter."""


def suite_path(name: str, suites_dir: Path = SUITES_DIR) -> Path:
    return suites_dir / f"{name}.json"


def _load_json(name: str, suites_dir: Path) -> dict[str, Any]:
    path = suite_path(name, suites_dir)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise SuiteError(f"suite {name!r} not found: expected {path}") from e
    except json.JSONDecodeError as e:
        raise SuiteError(f"{path} is not valid JSON: {e}") from e


@dataclass(frozen=True)
class PlainConfiguration:
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class PlainExpectation:
    """An expectation as ``read_suite_plain`` gives it: the attributes of GE's
    ``Expectation`` that the hot path reads (type, ``configuration.kwargs``, meta)."""

    expectation_type: str
    configuration: PlainConfiguration
    meta: dict[str, Any]


@dataclass(frozen=True)
class PlainSuite:
    name: str
    expectations: list[PlainExpectation]


def _check_meta(name: str, suite: ExpectationSuite | PlainSuite) -> None:
    seen: set[str] = set()
    expectations: Sequence[Expectation | PlainExpectation] = suite.expectations
    for i, exp in enumerate(expectations):
        meta = exp.meta or {}
        rule, action = meta.get("rule"), meta.get("action")
        where = f"suite {name!r} expectation #{i} ({exp.expectation_type})"
        if not rule or not isinstance(rule, str):
            raise SuiteError(f"{where}: meta.rule (the expectation's stable name) is missing")
        if rule in seen:
            raise SuiteError(f"{where}: meta.rule {rule!r} is used twice")
        if action not in ACTIONS:
            raise SuiteError(f"{where}: meta.action is {action!r}, expected one of {ACTIONS}")
        seen.add(rule)


def read_suite(name: str, suites_dir: Path = SUITES_DIR) -> ExpectationSuite:
    """The suite as stored, parsed by GE's ``ExpectationSuite`` (parameters left in place)."""
    from great_expectations.core import ExpectationSuite

    data = _load_json(name, suites_dir)
    try:
        suite = ExpectationSuite(
            name=data["name"],
            expectations=data["expectations"],
            notes=data.get("notes"),
            meta=data.get("meta"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise SuiteError(f"{suite_path(name, suites_dir)} is not a GE suite: {e}") from e
    _check_meta(name, suite)
    return suite


def read_suite_plain(name: str, suites_dir: Path = SUITES_DIR) -> PlainSuite:
    """The suite's expectations as ``read_suite`` gives them, read without GE (whose import
    cost the hot path's start seconds of CPU). Literal ``min_value``/``max_value`` integers
    become floats, as GE's models make them (so ``>= 0.0``, not ``>= 0``): the rules derived
    from both readers are the same text (tests/test_dq_rules.py, every shipped suite). GE's
    validation runs still read the suite with GE, which checks the kwargs themselves."""
    data = _load_json(name, suites_dir)
    try:
        suite = PlainSuite(
            name=data["name"],
            expectations=[
                PlainExpectation(
                    expectation_type=e["type"],
                    configuration=PlainConfiguration(_as_ge_kwargs(e.get("kwargs") or {})),
                    meta=dict(e.get("meta") or {}),
                )
                for e in data["expectations"]
            ],
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise SuiteError(f"{suite_path(name, suites_dir)} is not a GE suite: {e}") from e
    _check_meta(name, suite)
    return suite


def _as_ge_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with literal integer bounds as floats, as GE's expectation models hold them."""
    out = copy.deepcopy(dict(kwargs))
    for key in ("min_value", "max_value"):
        value = out.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def fill_text(text: str, params: dict[str, Param]) -> str:
    """Replace ``${name}`` in a query with the parameter's SQL text."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in params:
            raise SuiteError(f"unknown suite parameter ${{{m.group(1)}}} in {text!r}")
        return params[m.group(1)].sql

    return _TEXT_PARAM.sub(sub, text)


def param_name(value: Any) -> str | None:
    """``name`` if ``value`` is GE's ``{"$PARAMETER": name}``, else None."""
    if isinstance(value, dict) and set(value) == {"$PARAMETER"}:
        return value["$PARAMETER"]
    return None


def _resolve_kwargs(kwargs: dict[str, Any], params: dict[str, Param]) -> dict[str, Any]:
    out = {}
    for key, value in kwargs.items():
        pname = param_name(value)
        if pname is not None:
            if pname not in params:
                raise SuiteError(f"unknown suite parameter {pname!r} in {key}")
            value = params[pname].value
        elif isinstance(value, str):
            value = fill_text(value, params)
        out[key] = value
    return out


def expectation_dicts(suite: ExpectationSuite) -> list[dict[str, Any]]:
    return [
        {
            "type": e.expectation_type,
            "kwargs": copy.deepcopy(dict(e.configuration.kwargs)),
            "meta": copy.deepcopy(dict(e.meta or {})),
        }
        for e in suite.expectations
    ]


def resolved_suite(
    suite: ExpectationSuite,
    params: dict[str, Param],
    keep: Any = None,
) -> ExpectationSuite:
    """A copy of ``suite`` with every parameter replaced by its value, for a GE run.

    ``keep(expectation) -> bool`` selects which expectations to keep (default: all).
    """
    exps = []
    for d, e in zip(expectation_dicts(suite), suite.expectations, strict=True):
        if keep is None or keep(e):
            d["kwargs"] = _resolve_kwargs(d["kwargs"], params)
            exps.append(d)
    from great_expectations.core import ExpectationSuite

    return ExpectationSuite(name=suite.name, expectations=exps, notes=suite.notes, meta=suite.meta)


def rule_of(expectation: Expectation | PlainExpectation) -> str:
    """``meta.rule`` of an expectation of a suite from ``read_suite`` (which checked it)."""
    return (expectation.meta or {})["rule"]


def action_of(expectation: Expectation | PlainExpectation) -> str:
    """``meta.action`` of an expectation of a suite from ``read_suite`` (which checked it)."""
    return (expectation.meta or {})["action"]
