"""Benchmark: frames/s from the simulator at full rate through ingestion into Kafka.

Starts a private embedded Kafka broker (in a temp data dir), the simulator as a child process
(``cryptoflow simulate``) and ingestion in this process, then reports:

* the hot path alone: classify + route + ``produce`` of prebuilt frames, no WebSocket: trade
  frames only, and the four kinds mixed (one of each per round);
* the end-to-end rate: live frames received and produced per second (steady state and whole
  run), per stream kind, deliveries acknowledged by the broker per second.

``--streams`` chooses the kinds streamed (default: trade, as before; ``all``: trade, aggTrade,
kline_1m and bookTicker of the three symbols on one combined connection).

    .venv/bin/python bench/bench_ingest.py --rate 100000 --seconds 20
    .venv/bin/python bench/bench_ingest.py --rate 100000 --seconds 20 --streams all
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
from cryptoflow.core.streams import KINDS  # noqa: E402
from ingestion.exchange_frames import agg_trade_frame, kline_frame  # noqa: E402
from ingestion.frames import Classifier, trade_frame  # noqa: E402
from ingestion.producer import FrameProducer  # noqa: E402
from ingestion.runner import run_ingestion  # noqa: E402
from ingestion.simulator.options import SimulatorOptions  # noqa: E402
from ingestion.simulator.runner import start_simulator_process  # noqa: E402
from ingestion.status import IngestStats  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _frames(i: int, mixed: bool) -> list[bytes]:
    """Frame ``i`` of the trade stream, or one frame of each kind when ``mixed``."""
    t = 1_700_000_000_000 + i
    trade = trade_frame("BTCUSDT", 10**9 + i, "90000.12345678", "0.00100000", t, bool(i & 1), True)
    if not mixed:
        return [trade]
    minute = t - t % 60_000
    row = [minute, "90000.1", "90001.2", "89999.3", "90000.4", "12.5", minute + 59_999,
           "1125000.5", 300 + i % 7, "6.1", "549000.2", "0"]  # fmt: skip
    quote = '"b":"90000.11","B":"0.50000000","a":"90000.12","A":"0.25000000"'
    data = f'{{"u":{10**10 + i},"s":"BTCUSDT",{quote}}}'
    book = f'{{"stream":"btcusdt@bookTicker","data":{data}}}'.encode()
    return [
        trade,
        agg_trade_frame(
            "BTCUSDT",
            10**8 + i,
            "90000.12345678",
            "0.00100000",
            10**9 + i,
            10**9 + i,
            t,
            bool(i & 1),
        ),  # fmt: skip
        kline_frame("BTCUSDT", row, closed=i % 60 == 0),
        book,
    ]


def hot_path(settings, n: int, mixed: bool = False) -> float:
    """classify + route + produce of ``n`` prebuilt frames (no WebSocket): frames/s."""
    stats = IngestStats()
    producer = FrameProducer(settings, stats)
    frames = [f for i in range(n // 4 if mixed else n) for f in _frames(i, mixed)]
    headers = [("source", b"simulator"), ("connection", b"bench")]
    classify = Classifier(settings.stream_kinds)
    topics = {k.name: settings.topic(k) for k in settings.stream_kinds}
    fallback = settings.kafka_topic
    start = time.perf_counter()
    for i, raw in enumerate(frames):
        f = classify(raw)
        topic = topics[f.kind.name] if f.kind is not None else fallback
        while not producer.try_produce(topic, f.key, raw, 1_700_000_000_000, headers):
            producer.poll(0.01)
        if i % 512 == 0:
            producer.poll(0)
    elapsed = time.perf_counter() - start
    producer.flush(60)
    return len(frames) / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=100_000, help="simulator trades/s (all symbols)")
    ap.add_argument("--seconds", type=float, default=20, help="length of the measured window")
    ap.add_argument("--hot-path", type=int, default=200_000, help="frames for the hot-path test")
    ap.add_argument("--streams", default="trade", help="kinds streamed, comma separated, or all")
    args = ap.parse_args()
    streams = ",".join(KINDS) if args.streams == "all" else args.streams
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
        streams=streams,
        status_interval_s=5,
        gap_probe_idle_s=5,
    )
    ensure_jars(s.jar_cache, KAFKA_JARS, s.maven_repo)
    kafka.start(s)
    sim = None
    try:
        kafka.ensure_topics(s)
        hot = s.replace(kafka_topic_prefix="bench.hot", streams=",".join(KINDS))
        kafka.ensure_topics(hot)
        print(
            "hot path (classify+route+produce, no WebSocket): "
            f"trades {hot_path(hot, args.hot_path):,.0f}/s, "
            f"four kinds mixed {hot_path(hot, args.hot_path, mixed=True):,.0f}/s"
        )

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
        k0 = {name: c.frames for name, c in stats.kinds.items()}
        samples = [(t0, f0)]
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1)
            samples.append((time.monotonic(), stats.frames))
        t1, f1, d1, sim1 = time.monotonic(), stats.frames, stats.delivered, sim.stats()
        k1 = {name: c.frames for name, c in stats.kinds.items()}
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
            f"dups={stats.duplicates} counted={stats.gaps_counted}"
        )
        per_kind = ", ".join(f"{k} {(k1[k] - k0.get(k, 0)) / span:,.0f}/s" for k in k1)
        print(f"by kind ({streams}; {len(s.symbols)} symbols): {per_kind}")
    finally:
        if sim is not None:
            sim.stop()
        kafka.stop(s)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
