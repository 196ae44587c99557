"""Serving-table data shared by the dashboard tests (Grafana queries, the live page)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serving_data import GeneratedRun


@pytest.fixture(scope="session")
def pipeline_run(settings) -> Iterator[GeneratedRun]:
    """Rows in raw_trades, metrics, quarantine, pipeline_batches and dq_results; ``more()``
    brings newer ones. Generated until `cryptoflow up --source sim` can fill them (sim_run)."""
    yield GeneratedRun(settings)
