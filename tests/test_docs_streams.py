"""docs/streams/: one page per stream kind of the registry, whose quarantine rule table is
its expectation suite's (every rule, with its action), so the docs cannot drift from the
suites. ``python -m tests.test_docs_streams <suite>`` prints the table to paste."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from cryptoflow.core.streams import KINDS, StreamKind

ROOT = Path(__file__).resolve().parents[1]
_ROW = re.compile(r"^\|\s*`([a-z0-9_]+)`\s*\|\s*(\w+)\s*\|", re.MULTILINE)


def suite_rules(suite: str) -> list[tuple[str, str, str]]:
    """(rule, action, meaning) of every expectation of ``suite``, in suite order."""
    doc = json.loads((ROOT / "expectations" / "suites" / f"{suite}.json").read_text())
    return [
        (e["meta"]["rule"], e["meta"]["action"], e["meta"].get("notes", ""))
        for e in doc["expectations"]
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def rules_table(suite: str) -> str:
    """The markdown table of ``suite``'s rules, as the stream pages carry it."""
    lines = ["| rule | action | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{r}` | {a} | {_cell(m)} |" for r, a, m in suite_rules(suite)]
    return "\n".join(lines)


@pytest.mark.parametrize("kind", KINDS.values(), ids=list(KINDS))
def test_stream_page_lists_every_rule_of_its_suite_with_its_action(kind: StreamKind):
    page = ROOT / kind.doc
    assert kind.doc.startswith("docs/streams/") and page.is_file(), f"{kind.doc} is missing"
    text = page.read_text()
    listed = dict(_ROW.findall(text))
    rules = {r: a for r, a, _ in suite_rules(kind.entity.suite)}
    assert sorted(set(rules) - set(listed)) == [], f"{kind.doc}: rules not listed"
    assert sorted(set(listed) - set(rules)) == [], f"{kind.doc}: rules not in the suite"
    wrong = {r: (listed[r], a) for r, a in rules.items() if listed[r] != a}
    assert wrong == {}, f"{kind.doc}: (listed, suite) actions differ"
    assert f"`{kind.entity.suite}`" in text or f"{kind.entity.suite}.json" in text
    for name in (kind.entity.table, kind.entity.lake, kind.topic, *kind.entity.key):
        assert f"`{name}`" in text or f"`{name}." in text or f".{name}." in text, (kind.doc, name)
    for f in kind.fields:
        assert f"`{f.column}`" in text, f"{kind.doc}: column {f.column} missing"


def test_streams_readme_is_linked_from_the_readme():
    assert (ROOT / "docs" / "streams" / "README.md").is_file()
    assert "docs/streams/README.md" in (ROOT / "README.md").read_text()


if __name__ == "__main__":
    print(rules_table(sys.argv[1]))
