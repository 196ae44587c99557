"""The streaming stages, in the order data flows through them."""

from __future__ import annotations

import importlib
from types import ModuleType

STAGES = ("bronze", "silver", "gold")


def job_module(stage: str) -> ModuleType:
    """``pipelines.<stage>.job``, whose ``start(spark, settings)`` starts the stage's query."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    return importlib.import_module(f"pipelines.{stage}.job")
