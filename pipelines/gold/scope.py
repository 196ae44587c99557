"""Which part of gold a micro-batch rewrites: symbols x time ranges covering its windows.

A batch touches some (symbol, window) pairs. Their time intervals, merged, give the ranges;
every window of those symbols lying wholly inside a range is recomputed from silver and
rewritten (Delta ``replaceWhere`` on the same predicate), so the rewrite is atomic and a
window is never half-updated.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date

from pyspark.sql import Column
from pyspark.sql import functions as F

from pipelines.gold.transform import merge_ranges, window_dates

Window = tuple[str, int, int]  # (symbol, window_seconds, window_start_us)
#: Above this many separate time ranges, one covering range is used instead.
MAX_RANGES = 64


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Scope:
    symbols: tuple[str, ...]
    ranges: tuple[tuple[int, int], ...]  # [start_us, end_us), sorted, disjoint

    @classmethod
    def of(cls, windows: set[Window]) -> Scope:
        ranges = merge_ranges((start, start + sec * 1_000_000) for _, sec, start in windows)
        if len(ranges) > MAX_RANGES:
            ranges = [(ranges[0][0], ranges[-1][1])]
        return cls(tuple(sorted({w[0] for w in windows})), tuple(ranges))

    @property
    def dates(self) -> list[date]:
        return window_dates(self.ranges)

    def contains(self, symbol: str, start_us: int, end_us: int) -> bool:
        """True when the window [start_us, end_us) of ``symbol`` lies inside one range."""
        if symbol not in self.symbols:
            return False
        i = bisect.bisect_right(self.ranges, (start_us, float("inf"))) - 1
        return i >= 0 and self.ranges[i][0] <= start_us and end_us <= self.ranges[i][1]

    def silver_filter(self) -> Column:
        """Silver rows of the scope: trade_date partitions, symbols, trade-time ranges.

        The column is compared as it is: Delta skips files on per-file min/max only for
        predicates on the plain column (``unix_micros(trade_time) >= n`` read every file of
        the day's partitions, a cost growing all day)."""
        t = F.col("trade_time")
        in_ranges = [
            (t >= F.timestamp_micros(F.lit(s))) & (t < F.timestamp_micros(F.lit(e)))
            for s, e in self.ranges
        ]
        cond = in_ranges[0]
        for more in in_ranges[1:]:
            cond = cond | more
        return (
            F.col("trade_date").isin(self.dates) & F.col("symbol").isin(list(self.symbols)) & (cond)
        )

    def gold_predicate(self, lengths: tuple[int, ...]) -> str:
        """Spark SQL predicate of the gold rows in the scope (for ``replaceWhere``); windows
        of other lengths (a former ``window_seconds``) are left alone."""
        dates = ", ".join(f"DATE'{d.isoformat()}'" for d in self.dates)
        symbols = ", ".join(_sql_string(s) for s in self.symbols)
        ranges = " OR ".join(
            f"(window_start >= timestamp_micros({s}) AND window_end <= timestamp_micros({e}))"
            for s, e in self.ranges
        )
        seconds = ", ".join(str(int(n)) for n in lengths)
        return (
            f"window_date IN ({dates}) AND symbol IN ({symbols}) "
            f"AND window_seconds IN ({seconds}) AND ({ranges})"
        )
