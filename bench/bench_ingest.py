"""Benchmark: frames/s from the simulator at full rate through ingestion into Kafka.

Starts a private embedded Kafka broker (in a temp data dir), the simulator as a child process
(``cryptoflow simulate``) and ingestion in this process, then reports:

* the end-to-end rate: live frames received and produced per second (steady state and whole
  run), deliveries acknowledged by the broker per second;
* the hot path alone: ``classify`` + ``produce`` of simulator-shaped frames, no WebSocket.

    .venv/bin/python bench/bench_ingest.py --rate 100000 --seconds 20
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptoflow.core.config import load_settings  # noqa: E402
from cryptoflow.core.jars import KAFKA_JARS, ensure_jars  # noqa: E402
from cryptoflow.core.logs import setup_logging  # noqa: E402
from cryptoflow.core.services import kafka  # noqa: E402
from ingestion.frames import classify, trade_frame  # noqa: E402
from ingestion.producer import FrameProducer  # noqa: E402
from ingestion.runner import run_ingestion  # noqa: E402
from ingestion.simulator.options import SimulatorOptions  # noqa: E402
from ingestion.simulator.runner import start_simulator_process  # noqa: E402
from ingestion.status import IngestStats  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hot_path(settings, n: int) -> float:
    """classify + produce of ``n`` prebuilt frames (no WebSocket): frames/s."""
    stats = IngestStats()
    producer = FrameProducer(settings, stats)
    frames = [
        trade_frame(
            "BTCUSDT",
            10**9 + i,
            "90000.12345678",
            "0.00100000",
            1_700_000_000_000 + i,
            bool(i & 1),
            True,
        )
        for i in range(n)
    ]
    headers = [("source", b"simulator"), ("connection", b"bench")]
    topic = settings.kafka_topic
    start = time.perf_counter()
    for i, raw in enumerate(frames):
        f = classify(raw)
        while not producer.try_produce(topic, f.key, raw, 1_700_000_000_000, headers):
            producer.poll(0.01)
        if i % 512 == 0:
            producer.poll(0)
    elapsed = time.perf_counter() - start
    producer.flush(60)
    return n / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=100_000, help="simulator trades/s (all symbols)")
    ap.add_argument("--seconds", type=float, default=20, help="length of the measured window")
    ap.add_argument("--hot-path", type=int, default=200_000, help="frames for the hot-path test")
    args = ap.parse_args()
    setup_logging("WARNING")

    data_dir = Path(tempfile.mkdtemp(prefix="cryptoflow-bench-"))
    data_dir.chmod(0o755)
    base = load_settings(environ={}, dotenv=None)
    s = load_settings(
        environ={},
        dotenv=None,
        data_dir=data_dir,
        jar_cache=base.jar_cache,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        sim_port=free_port(),
        kafka_topic_prefix="bench.raw",
        source="sim",
        status_interval_s=5,
        gap_probe_idle_s=5,
    )
    ensure_jars(s.jar_cache, KAFKA_JARS, s.maven_repo)
    kafka.start(s)
    sim = None
    try:
        kafka.ensure_topic(s)
        hot = s.replace(kafka_topic_prefix="bench.hot")
        kafka.ensure_topic(hot)
        print(f"hot path (classify+produce, no WebSocket): {hot_path(hot, args.hot_path):,.0f}/s")

        # the simulator runs unbounded; ingestion connects, then a fixed window is measured
        sim = start_simulator_process(s, SimulatorOptions(seed=1, rate=args.rate))
        stats = IngestStats()
        stop = threading.Event()
        t = threading.Thread(target=run_ingestion, args=(s, stop), kwargs={"stats": stats})
        t.start()
        deadline = time.monotonic() + 60
        while stats.frames < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
        t0, f0, d0, sim0 = time.monotonic(), stats.frames, stats.delivered, sim.stats()
        samples = [(t0, f0)]
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1)
            samples.append((time.monotonic(), stats.frames))
        t1, f1, d1, sim1 = time.monotonic(), stats.frames, stats.delivered, sim.stats()
        sim.stop()
        stop.set()
        t.join(120)
        span = t1 - t0
        best = (
            max((b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[5:], strict=False))
            if len(samples) > 5
            else 0.0
        )
        sent = sim1["frames_sent"] - sim0["frames_sent"]
        print(
            f"simulator: target {args.rate:,.0f} trades/s, sent {sent / span:,.0f} frames/s "
            f"over the window; slow_consumer_drops={sim1['slow_consumer_drops']}"
        )
        print(
            f"ingestion: {(f1 - f0) / span:,.0f} frames/s produced over {span:.0f} s "
            f"(best 5 s: {best:,.0f}/s), {(d1 - d0) / span:,.0f} deliveries/s acknowledged; "
            f"reconnects={stats.reconnects} gaps={stats.gaps_found} filled={stats.ids_filled} "
            f"dups={stats.duplicates}"
        )
    finally:
        if sim is not None:
            sim.stop()
        kafka.stop(s)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
