"""Benchmark: where a bronze micro-batch's time goes, bronze alone at a live-like rate.

Starts the bronze query (``pipelines.bronze.job``) in this process on a private stack,
produces ``--rate`` trade frames a second into the raw topic for ``--seconds``, and reports
the median of each ``durationMs`` phase of Structured Streaming's progress over the
batches after ``--warmup`` (``addBatch`` is the Delta append; ``walCommit`` and
``commitOffsets`` are the checkpoint's offset and commit files).

    .venv/bin/python bench/bench_bronze.py --rate 30 --seconds 60 --warmup 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

from confluent_kafka import Producer
from stack import private_stack, save

from cryptoflow.spark import get_spark
from pipelines.bronze import job as bronze
from pipelines.progress import stop_between_batches


def _produce(settings, rate: float, stop: threading.Event) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5})
    trade_id, symbols = 0, settings.symbols
    while not stop.wait(1 / rate):
        trade_id += 1
        symbol = symbols[trade_id % len(symbols)]
        now = int(time.time() * 1000)
        data = {"e": "trade", "E": now, "s": symbol, "t": trade_id, "p": "100.00",
                "q": "0.1", "T": now, "m": False, "M": True}  # fmt: skip
        frame = {"stream": f"{symbol.lower()}@trade", "data": data}
        producer.produce(settings.kafka_topic, json.dumps(frame).encode(), key=symbol.encode())
        producer.poll(0)
    producer.flush(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=30.0, help="trade frames/s")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured period")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds ignored after start")
    args = ap.parse_args()
    with private_stack() as s:
        spark = get_spark(s, "bench-bronze")
        query = bronze.start(spark, s)
        stop = threading.Event()
        producer = threading.Thread(target=_produce, args=(s, args.rate, stop), daemon=True)
        producer.start()
        started = time.monotonic()
        phases: dict[int, dict] = {}
        try:
            while time.monotonic() - started < args.warmup + args.seconds:
                time.sleep(1)
                if time.monotonic() - started < args.warmup:
                    continue
                for p in query.recentProgress:
                    if p["numInputRows"] and p["batchId"] not in phases:
                        phases[p["batchId"]] = p["durationMs"]
        finally:
            stop.set()
            producer.join(15)
            stop_between_batches([query])
            spark.stop()
    names = sorted({k for d in phases.values() for k in d})
    medians = {k: statistics.median(d.get(k, 0) for d in phases.values()) for k in names}
    print(f"bronze batches measured: {len(phases)}")
    for name in names:
        print(f"  {name:>17}: median {medians[name]:.0f} ms")
    result = {"rate": args.rate, "batches": len(phases), "median_ms": medians}
    print(f"saved {save('bronze', result)}")


if __name__ == "__main__":
    main()
