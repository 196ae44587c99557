"""End-to-end latency percentiles over the last minute, for the status view of ``up``."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np


class LatencyWindow:
    """The latencies of the batches of the last ``seconds``, as percentiles.

    Each batch keeps at most ``per_batch`` evenly spaced order statistics of its latencies,
    each weighing for the values it stands for, so a percentile over the window is exact
    for small batches and within one order-statistic step of the batch's values for big
    ones, at a bounded cost. ``add`` runs on the batch thread, ``percentiles`` on the
    status view's."""

    def __init__(
        self,
        seconds: float = 60.0,
        per_batch: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self.per_batch, self.clock = seconds, per_batch, clock
        self._batches: deque[tuple[float, np.ndarray, float]] = deque()
        self._lock = threading.Lock()

    def add(self, latencies: Sequence[float]) -> None:
        values = np.sort(np.asarray(latencies, dtype=float))
        values = values[~np.isnan(values)]
        if not values.size:
            return
        if values.size > self.per_batch:
            picks = np.linspace(0, values.size - 1, self.per_batch).round().astype(int)
            weight = values.size / self.per_batch
            values = values[picks]
        else:
            weight = 1.0
        self.add_statistics(values, weight)

    def add_statistics(self, values: np.ndarray, weight: float) -> None:
        """Add a batch given as sorted order statistics, each standing for ``weight`` values
        (``pipelines.batch_tasks.order_statistics`` of a histogram)."""
        if not values.size:
            return
        now = self.clock()
        with self._lock:
            self._batches.append((now, values, weight))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._batches and now - self._batches[0][0] > self.seconds:
            self._batches.popleft()

    def percentiles(self, *qs: float) -> tuple[float | None, ...]:
        """Nearest-rank percentiles (``qs`` in 0..1) of the window; None for each when empty."""
        with self._lock:
            self._trim(self.clock())
            batches = list(self._batches)
        if not batches:
            return tuple(None for _ in qs)
        values = np.concatenate([b[1] for b in batches])
        weights = np.concatenate([np.full(b[1].size, b[2]) for b in batches])
        order = np.argsort(values, kind="stable")
        values, cumulative = values[order], np.cumsum(weights[order])
        total = cumulative[-1]
        out: list[float | None] = []
        for q in qs:
            i = int(np.searchsorted(cumulative, q * total - 1e-9, side="left"))
            out.append(float(values[min(i, values.size - 1)]))
        return tuple(out)
