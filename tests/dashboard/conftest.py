"""Serving-table data shared by the dashboard tests (Grafana queries, the live page): a short
simulated pipeline run, `cryptoflow up --source sim` as a user starts it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import make_data_dir
from tests.sim_run import SimRun


@pytest.fixture(scope="session")
def pipeline_run(settings) -> Iterator[SimRun]:
    """Rows in raw_trades, metrics, quarantine, pipeline_batches and dq_results written by a
    running pipeline; newer rows keep arriving while the session lasts."""
    run = SimRun(settings, make_data_dir("cryptoflow-dashboard-"))
    try:
        run.wait_for_data()
        yield run
    finally:
        run.stop()
