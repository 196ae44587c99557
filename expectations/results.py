"""What one validation run found: the contract between the checkpoint and its history."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result in one run."""

    rule: str
    action: str
    type: str
    success: bool
    evaluated: int | None  # rows the expectation looked at (GE element_count)
    unexpected: int | None  # rows that failed it
    missing: int | None = None  # NULL rows a column-map expectation skipped

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ValidationRun:
    """Summary of one checkpoint run (one row of ``dq_results``)."""

    run_id: str
    table: str
    suite: str
    delta_version: int
    as_of: str | None
    success: bool
    rows: int
    started_at: datetime
    duration_ms: int
    docs_index: str | None
    outcomes: list[ExpectationOutcome] = field(default_factory=list)

    @property
    def evaluated(self) -> int:
        return len(self.outcomes)

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]
