"""Gold's scope reads only the silver files that can hold its trades (Delta data skipping)."""

from __future__ import annotations

from pyspark.sql import functions as F

from pipelines.gold.scope import Scope
from tests.gold_data import MIDNIGHT_MS, latencies, silver_frame, trade

MINUTE_MS = 60_000


def _files_read(df) -> int:
    df.collect()
    scan = df._jdf.queryExecution().executedPlan().collectLeaves().apply(0)
    return int(scan.metrics().apply("numFiles").value())


def test_silver_filter_skips_files_outside_the_ranges(spark, tmp_path):
    path = str(tmp_path / "silver")
    start = MIDNIGHT_MS + 3_600_000  # one trade_date partition
    for minute in range(12):  # one commit, one file per minute of trades
        trades = [
            trade(
                "BTCUSDT",
                minute * 10 + i,
                "1.5",
                "0.1",
                start + minute * MINUTE_MS + i * 1000,
                False,
            )
            for i in range(10)
        ]
        frame = silver_frame(spark, trades, latencies(trades)).coalesce(1)
        frame.write.format("delta").mode("append").partitionBy("trade_date").save(path)
    silver = spark.read.format("delta").load(path)
    assert _files_read(silver.where(F.lit(True))) == 12

    # Windows [minute 3, minute 4) and the first 5 s of minute 7: two ranges, two files.
    w = start * 1000 + 3 * MINUTE_MS * 1000
    scope = Scope.of({("BTCUSDT", 60, w), ("BTCUSDT", 5, start * 1000 + 7 * MINUTE_MS * 1000)})
    scoped = silver.where(scope.silver_filter())
    assert _files_read(scoped) == 2
    ids = sorted(r.trade_id for r in scoped.select("trade_id").collect())
    assert ids == [*range(30, 40), *range(70, 75)]
    # Other symbols are not in scope.
    assert silver.where(Scope.of({("ETHUSDT", 60, w)}).silver_filter()).count() == 0
