"""Which batches run as small ones (``pipelines.small_batches``)."""

from __future__ import annotations

import pytest

from pipelines.small_batches import is_small


@pytest.mark.parametrize(
    ("previous_rows", "small_rows", "small"),
    [
        (None, 5_000, False),  # a run's first batch may drain a backlog
        (0, 5_000, True),  # an idle stream
        (230, 5_000, True),  # a live batch of four kinds at 30 trades/s
        (4_999, 5_000, True),
        (5_000, 5_000, False),
        (200_000, 5_000, False),  # a drain
        (0, 0, False),  # CRYPTOFLOW_SMALL_BATCH_ROWS=0: never
    ],
)
def test_a_batch_after_one_of_fewer_records_than_the_setting_is_small(
    previous_rows, small_rows, small
):
    assert is_small(previous_rows, small_rows) is small
