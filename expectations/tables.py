"""Which Delta table each expectation suite validates off the hot path (``cryptoflow validate``
and the periodic validation of ``up``): every stream kind's silver table, from the registry
(``cryptoflow.core.streams``), and gold. Light to import (no Spark, no GE): the commands'
``--table`` choices come from here.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptoflow.core.config import Settings
from cryptoflow.core.streams import KINDS

GOLD = "gold"
#: Delta table -> the suite that validates it: each kind's silver table, then gold.
SUITE_OF_TABLE: dict[str, str] = {
    **{k.entity.lake: k.entity.suite for k in KINDS.values()},
    GOLD: "gold_metrics",
}


def validation_tables(settings: Settings, exists: Callable[[str], bool]) -> list[str]:
    """What ``all`` validates: the silver tables of ``settings.stream_kinds`` that ``exists``
    (the pipeline creates a kind's table when it first runs with the kind), then gold, always
    (the pipeline creates it from its first run: a missing gold is worth reporting)."""
    return [k.entity.lake for k in settings.stream_kinds if exists(k.entity.lake)] + [GOLD]
