"""Benchmark: what the expectation rules cost in silver's hot path.

Times one silver micro-batch transform of ``--rows`` bronze frames (1% of them bad) with and
without the suite's rules: ``parse_frames`` alone, then ``parse_frames`` + ``apply_rules``
(every row-level rule of ``expectations/suites/silver_trades.json``) + the keep/quarantine
split. Input frames are generated and cached first; each variant is forced with Spark's
``noop`` sink, ``--repeat`` times alternately after a warm-up, and the median is reported.

    .venv/bin/python bench/bench_validation.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime

from pyspark.sql import functions as F

from cryptoflow.core.config import load_settings
from cryptoflow.core.spark import get_spark
from expectations.rules import trade_rules
from pipelines.silver.transform import parse_frames, silver_rows
from pipelines.silver.validate import apply_rules

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT")


def bronze_frames(spark, n: int, t0_ms: int):
    """``n`` bronze rows holding combined-stream trade frames; every 100th has price 0."""
    i = F.col("id")
    sym = F.element_at(F.array(*[F.lit(s) for s in SYMBOLS]), (i % 3 + 1).cast("int"))
    price = F.when(i % 100 == 0, F.lit("0.00000000")).otherwise(
        F.format_string("%d.%08d", F.lit(90_000) + i % 1000, i % 99_999_999)
    )
    data = F.to_json(
        F.struct(
            F.lit("trade").alias("e"), (F.lit(t0_ms) + i + 3).alias("E"), sym.alias("s"),
            i.alias("t"), price.alias("p"), F.lit("0.00100000").alias("q"),
            (F.lit(t0_ms) + i).alias("T"), (i % 2 == 0).alias("m"), F.lit(True).alias("M"),
        )
    )  # fmt: skip
    frame = F.format_string('{"stream":"%s@trade","data":%s}', F.lower(sym), data)
    header = F.struct(F.lit("source").alias("key"), F.lit("simulator").alias("value"))
    return spark.range(n).select(
        frame.cast("binary").alias("value"),
        sym.alias("key"),
        F.lit("bench").alias("topic"),
        (i % 3).cast("int").alias("partition"),
        i.alias("offset"),
        F.timestamp_millis(F.lit(t0_ms) + i + 40).alias("kafka_timestamp"),
        F.array(header).alias("headers"),
    )


def timed(frames: list, repeat: int) -> list[list[float]]:
    """Seconds per run of each frame; runs alternate so load drift hits both alike."""
    for df in frames:  # warm-up
        df.write.format("noop").mode("overwrite").save()
    out: list[list[float]] = [[] for _ in frames]
    for _ in range(repeat):
        for times, df in zip(out, frames, strict=True):
            t = time.perf_counter()
            df.write.format("noop").mode("overwrite").save()
            times.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000, help="bronze frames per batch")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per variant")
    args = ap.parse_args()

    settings = load_settings()
    spark = get_spark(settings, "bench-validation")
    t0_ms = int(time.time() * 1000) - 3_600_000
    bronze = bronze_frames(spark, args.rows, t0_ms).persist()
    bronze.count()
    spark_time = datetime.now(UTC)
    rules = trade_rules(settings)

    parsed = parse_frames(bronze, spark_time)
    # Without rules silver still parses everything the rules read (parse_error, stream, ...).
    without = parsed.select(*silver_rows(parsed).columns, "parse_error", "stream", "event_type")
    evaluated = apply_rules(parsed, rules)
    counts = {r.dropped: r["count"] for r in evaluated.groupBy("dropped").count().collect()}

    cols = [*without.columns, "failed_expectations", "dropped", "fail_rule"]
    base, checked = timed([without, evaluated.select(*cols)], args.repeat)
    result = {
        "rows": args.rows,
        "rules": len(rules),
        "kept": counts.get(False, 0),
        "quarantined": counts.get(True, 0),
        "without_rules_s": round(statistics.median(base), 3),
        "with_rules_s": round(statistics.median(checked), 3),
    }
    result["overhead_s"] = round(result["with_rules_s"] - result["without_rules_s"], 3)
    result["overhead_pct"] = round(100 * result["overhead_s"] / result["without_rules_s"], 1)
    result["us_per_row_rules"] = round(1e6 * result["overhead_s"] / args.rows, 2)
    print(json.dumps(result))
    spark.stop()


if __name__ == "__main__":
    main()
