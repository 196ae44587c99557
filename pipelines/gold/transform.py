"""Gold: per-symbol windowed trade metrics, exact (DESIGN.md "Serving tables", docs/gold.md).

Two steps, both free of I/O:

1. ``window_sums`` (DataFrame -> DataFrame): exact decimal sums per (symbol, window) in Spark.
   Sums of decimal(18,8) are exact in Spark (decimal(28,8); products decimal(37,16) summed
   to decimal(38,16)), so nothing is rounded here.
2. ``finish`` (one sums row -> one metrics row): the divisions and the square root, done on
   exact fractions and rounded half-even to ``METRIC_SCALE`` places (``pipelines.gold.exact``).
   Spark's own decimal division rounds twice and ``stddev_samp`` is a double, so they are not
   used.

Windows are tumbling, ``[start, start + length)``, aligned to the epoch exactly like Spark's
``window()``: start = trade_time - (trade_time mod length).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.gold.exact import round_half_even, sqrt_half_even

#: Decimal places of every divided or rooted metric (avg_price, price_stddev, vwap,
#: buy_sell_ratio, trade_intensity, liquidity_proxy, avg_*_latency_ms): exact value, rounded
#: half-even. Sums (volumes) and min/max keep the trades' own scale (8) and are exact.
METRIC_SCALE = 12
#: The long window every deployment also gets, next to ``settings.window_seconds``.
LONG_WINDOW_SECONDS = 60
LATENCIES = ("exchange_latency_ms", "source_latency_ms", "end_to_end_latency_ms")

SUM = T.DecimalType(28, 8)  # Spark's sum of decimal(18,8)
SUM_OF_PRODUCTS = T.DecimalType(38, 16)  # Spark's sum of decimal(18,8) * decimal(18,8)
PRICE = T.DecimalType(18, 8)
DERIVED = T.DecimalType(38, METRIC_SCALE)

#: The Postgres ``metrics`` columns, in order (sql/002_metrics.sql).
METRIC_COLUMNS = (
    "symbol",
    "window_start",
    "window_end",
    "trade_count",
    "total_volume",
    "avg_price",
    "min_price",
    "max_price",
    "price_stddev",
    "vwap",
    "buy_volume",
    "sell_volume",
    "buy_sell_ratio",
    "trade_intensity",
    "liquidity_proxy",
    "avg_exchange_latency_ms",
    "avg_source_latency_ms",
    "avg_end_to_end_latency_ms",
)

#: Delta gold: the metrics columns, then window length, the newest trade in the window and
#: the partition column.
GOLD_SCHEMA = T.StructType(
    [
        T.StructField("symbol", T.StringType(), False),
        T.StructField("window_start", T.TimestampType(), False),
        T.StructField("window_end", T.TimestampType(), False),
        T.StructField("trade_count", T.LongType(), False),
        T.StructField("total_volume", SUM, False),
        T.StructField("avg_price", DERIVED, False),
        T.StructField("min_price", PRICE, False),
        T.StructField("max_price", PRICE, False),
        T.StructField("price_stddev", DERIVED, True),
        T.StructField("vwap", DERIVED, True),
        T.StructField("buy_volume", SUM, False),
        T.StructField("sell_volume", SUM, False),
        T.StructField("buy_sell_ratio", DERIVED, True),
        T.StructField("trade_intensity", DERIVED, False),
        T.StructField("liquidity_proxy", DERIVED, False),
        T.StructField("avg_exchange_latency_ms", DERIVED, True),
        T.StructField("avg_source_latency_ms", DERIVED, True),
        T.StructField("avg_end_to_end_latency_ms", DERIVED, True),
        T.StructField("window_seconds", T.IntegerType(), False),
        T.StructField("last_trade_time", T.TimestampType(), False),
        T.StructField("window_date", T.DateType(), False),
    ]
)
GOLD_COLUMNS = tuple(f.name for f in GOLD_SCHEMA.fields)


def window_lengths(window_seconds: int) -> tuple[int, ...]:
    """The window lengths gold computes: the configured one and one minute (once if equal)."""
    return tuple(sorted({int(window_seconds), LONG_WINDOW_SECONDS}))


def window_start_us(trade_time: Column, seconds: int) -> Column:
    """Epoch-aligned start (microseconds) of the ``seconds``-long window holding ``trade_time``."""
    us = F.unix_micros(trade_time)
    return us - F.pmod(us, F.lit(seconds * 1_000_000))


def window_sums(silver: DataFrame, lengths: Iterable[int]) -> DataFrame:
    """Exact per-(symbol, window) sums of silver trades, one group per window length.

    Columns: symbol, window_seconds, window_start_us, trade_count, sum_price, sum_price_sq,
    sum_notional, total_volume, min_price, max_price, buy_volume, sell_volume, last_trade_us,
    and for each latency L: sum_L, count_L.
    """
    price, qty = F.col("price").cast(PRICE), F.col("quantity").cast(PRICE)
    aggs = [
        F.count(F.lit(1)).alias("trade_count"),
        F.sum(price).cast(SUM).alias("sum_price"),
        F.sum(price * price).cast(SUM_OF_PRODUCTS).alias("sum_price_sq"),
        F.sum(price * qty).cast(SUM_OF_PRODUCTS).alias("sum_notional"),
        F.sum(qty).cast(SUM).alias("total_volume"),
        F.min(price).alias("min_price"),
        F.max(price).alias("max_price"),
        # m false: the taker bought; m true: the taker sold (DESIGN.md)
        F.coalesce(F.sum(F.when(~F.col("is_buyer_maker"), qty)), F.lit(0))
        .cast(SUM)
        .alias("buy_volume"),
        F.coalesce(F.sum(F.when(F.col("is_buyer_maker"), qty)), F.lit(0))
        .cast(SUM)
        .alias("sell_volume"),
        F.max(F.unix_micros("trade_time")).alias("last_trade_us"),
    ]
    for name in LATENCIES:
        aggs.append(F.sum(F.col(name).cast("long")).alias(f"sum_{name}"))
        aggs.append(F.count(F.col(name)).alias(f"count_{name}"))
    # One row per (trade, window length): one scan and one shuffle for every length.
    windows = F.array(
        *[
            F.struct(
                F.lit(seconds).alias("window_seconds"),
                window_start_us(F.col("trade_time"), seconds).alias("window_start_us"),
            )
            for seconds in lengths
        ]
    )
    return (
        silver.withColumn("w", F.explode(windows))
        .groupBy("symbol", F.col("w.window_seconds"), F.col("w.window_start_us"))
        .agg(*aggs)
    )


def from_micros(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _ratio(num: Decimal | int, den: Decimal | int) -> Decimal | None:
    if not den:
        return None
    return round_half_even(Fraction(num) / Fraction(den), METRIC_SCALE)


def finish(sums: Mapping[str, Any]) -> dict[str, Any]:
    """One gold row (``GOLD_COLUMNS``) from one ``window_sums`` row, exact (module doc)."""
    n = int(sums["trade_count"])
    seconds = int(sums["window_seconds"])
    start_us = int(sums["window_start_us"])
    s1, s2 = Fraction(sums["sum_price"]), Fraction(sums["sum_price_sq"])
    stddev = None
    if n > 1:  # sample variance from exact sums: (n*S2 - S1^2) / (n*(n-1))
        stddev = sqrt_half_even((n * s2 - s1 * s1) / (n * (n - 1)), METRIC_SCALE)
    start = from_micros(start_us)
    row = {
        "symbol": sums["symbol"],
        "window_start": start,
        "window_end": start + timedelta(seconds=seconds),
        "trade_count": n,
        "total_volume": sums["total_volume"],
        "avg_price": _ratio(sums["sum_price"], n),
        "min_price": sums["min_price"],
        "max_price": sums["max_price"],
        "price_stddev": stddev,
        "vwap": _ratio(sums["sum_notional"], sums["total_volume"]),
        "buy_volume": sums["buy_volume"],
        "sell_volume": sums["sell_volume"],
        "buy_sell_ratio": _ratio(sums["buy_volume"], sums["sell_volume"]),
        "trade_intensity": _ratio(n, seconds),
        "liquidity_proxy": _ratio(sums["total_volume"], seconds),
    }
    for name in LATENCIES:
        total, count = sums[f"sum_{name}"], sums[f"count_{name}"]
        row[f"avg_{name}"] = _ratio(total, count) if count else None
    row["window_seconds"] = seconds
    row["last_trade_time"] = from_micros(int(sums["last_trade_us"]))
    row["window_date"] = start.date()
    return row


def gold_frame(spark: SparkSession, rows: Iterable[Mapping[str, Any]]) -> DataFrame:
    """Gold rows (dicts from ``finish``) as a DataFrame with ``GOLD_SCHEMA``."""
    return spark.createDataFrame(
        [tuple(r[c] for c in GOLD_COLUMNS) for r in rows], schema=GOLD_SCHEMA
    )


def compute_metrics(silver: DataFrame, window_seconds: int) -> DataFrame:
    """All gold rows of ``silver`` (both window lengths): ``window_sums`` then ``finish``.

    Collects the sums (one row per symbol and window) to the driver to finish them exactly.
    """
    sums = window_sums(silver, window_lengths(window_seconds)).collect()
    return gold_frame(silver.sparkSession, [finish(r.asDict()) for r in sums])
