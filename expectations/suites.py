"""The versioned Great Expectations suites in ``expectations/suites/*.json``, loaded with GE.

``read_suite`` gives the suite as written (parameters unresolved) for the hot-path translator;
``resolved_suite`` fills the parameters with values for a GE validation run. Every expectation
carries ``meta.rule`` (its stable name, unique in the suite) and ``meta.action`` (warn | drop |
fail, Delta Live Tables' meaning); a suite file that lacks them is rejected with the reason.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from great_expectations.core import ExpectationSuite
from great_expectations.expectations.expectation import Expectation

from cryptoflow.core.errors import CryptoflowError
from expectations.params import Param

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


def _check_meta(name: str, suite: ExpectationSuite) -> None:
    seen: set[str] = set()
    for i, exp in enumerate(suite.expectations):
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
    return ExpectationSuite(name=suite.name, expectations=exps, notes=suite.notes, meta=suite.meta)


def rule_of(expectation: Expectation) -> str:
    """``meta.rule`` of an expectation of a suite from ``read_suite`` (which checked it)."""
    return (expectation.meta or {})["rule"]


def action_of(expectation: Expectation) -> str:
    """``meta.action`` of an expectation of a suite from ``read_suite`` (which checked it)."""
    return (expectation.meta or {})["action"]
