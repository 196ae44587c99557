"""Frames per second one websockets client receives from the simulator at full rate.

    .venv/bin/python bench/bench_simulator.py --rate 100000 --seconds 10

Starts ``cryptoflow simulate`` as a child process (its own core), connects one client to the
combined streams of the default symbols (``@trade`` by default; ``--streams
trade,aggTrade,kline_1m,bookTicker`` for every kind) and counts frames (and spot-checks that
trade ids per symbol increase: no faults are injected).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import connect  # noqa: E402
from websockets.client import ClientProtocol  # noqa: E402
from websockets.frames import Frame, Opcode  # noqa: E402
from websockets.uri import parse_uri  # noqa: E402

from cryptoflow.core.config import load_settings  # noqa: E402
from ingestion.simulator import SimulatorOptions, start_simulator_process  # noqa: E402
from tests.conftest import free_port, make_data_dir  # noqa: E402


class Meter:
    """Counts frames after a warm-up and spot-checks that ids per symbol increase."""

    def __init__(self, seconds: float, warmup: float) -> None:
        self.t_measure = time.monotonic() + warmup
        self.seconds = seconds
        self.frames = self.size = self.regressions = 0
        self.t0 = 0.0
        self.last: dict[str, int] = {}

    def add(self, msg: str | bytes, now: float) -> bool:
        """Count one frame; True when the measurement is over."""
        if not self.t0 and now >= self.t_measure:
            self.t0, self.frames, self.size = now, 0, 0
        self.frames += 1
        self.size += len(msg)
        if self.frames % 97 == 0:  # spot-check payloads without paying json on every frame
            data = json.loads(msg)["data"]
            if data.get("e") != "trade":
                return bool(self.t0) and now - self.t0 >= self.seconds
            if data["s"] in self.last and data["t"] <= self.last[data["s"]]:
                self.regressions += 1
            self.last[data["s"]] = data["t"]
        return bool(self.t0) and now - self.t0 >= self.seconds

    def result(self, now: float) -> tuple[int, float, int, int]:
        return self.frames, now - self.t0, self.size, self.regressions


async def receive_asyncio(url: str, meter: Meter) -> tuple[int, float, int, int]:
    """The websockets asyncio client: one ``await ws.recv()`` per frame."""
    async with connect(url, max_size=2**20, max_queue=4096, compression=None) as ws:
        while True:
            msg = await ws.recv()
            now = time.monotonic()
            if meter.add(msg, now):
                return meter.result(now)


async def receive_sansio(url: str, meter: Meter) -> tuple[int, float, int, int]:
    """websockets' sans-I/O ClientProtocol over a raw asyncio stream: frames parsed in bulk
    from each socket read, no per-frame task switch (how a high-rate client should read)."""
    wsuri = parse_uri(url)
    protocol = ClientProtocol(wsuri)
    reader, writer = await asyncio.open_connection(wsuri.host, wsuri.port, limit=2**22)
    protocol.send_request(protocol.connect())
    for chunk in protocol.data_to_send():
        writer.write(chunk)
    while True:
        data = await reader.read(2**20)
        if not data:
            raise ConnectionError("simulator closed the connection")
        protocol.receive_data(data)
        for chunk in protocol.data_to_send():  # pongs
            writer.write(chunk)
        now = time.monotonic()
        for event in protocol.events_received():
            is_text = isinstance(event, Frame) and event.opcode is Opcode.TEXT
            if is_text and meter.add(event.data, now):
                writer.close()
                return meter.result(now)


async def receive_raw(url: str, meter: Meter) -> tuple[int, float, int, int]:
    """Handshake with websockets, then count frames by walking their headers: what the
    simulator delivers, with no client-library cost per frame."""
    wsuri = parse_uri(url)
    protocol = ClientProtocol(wsuri)
    reader, writer = await asyncio.open_connection(wsuri.host, wsuri.port, limit=2**22)
    protocol.send_request(protocol.connect())
    for chunk in protocol.data_to_send():
        writer.write(chunk)
    head = await reader.readuntil(b"\r\n\r\n")  # the 101 response
    assert head.startswith(b"HTTP/1.1 101"), head
    buf = b""
    while True:
        data = await reader.read(2**20)
        if not data:
            raise ConnectionError("simulator closed the connection")
        buf += data
        now = time.monotonic()
        pos, end = 0, len(buf)
        while pos + 2 <= end:
            n = buf[pos + 1] & 0x7F
            hdr = 2 if n < 126 else 4 if n == 126 else 10
            if pos + hdr > end:
                break
            if n == 126:
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif n == 127:
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            if pos + hdr + n > end:
                break
            if buf[pos] == 0x81 and meter.add(buf[pos + hdr : pos + hdr + n], now):
                writer.close()
                return meter.result(now)
            pos += hdr + n
        buf = buf[pos:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=100_000, help="simulator --rate (trades/s)")
    ap.add_argument("--seconds", type=float, default=10, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=2, help="seconds ignored at the start")
    ap.add_argument(
        "--streams",
        default="trade",
        help="comma-separated stream kinds per symbol (default trade; all four: "
        "trade,aggTrade,kline_1m,bookTicker)",
    )
    ap.add_argument(
        "--client",
        choices=("asyncio", "sansio", "raw"),
        default="sansio",
        help="asyncio: websockets' asyncio client, one recv() per frame; "
        "sansio: websockets' protocol parser fed with whole socket reads (default); "
        "raw: frames counted from their headers (the simulator's own throughput)",
    )
    args = ap.parse_args()
    data_dir = make_data_dir("cryptoflow-bench-")
    settings = load_settings(environ={}, dotenv=None, data_dir=data_dir, sim_port=free_port())
    proc = start_simulator_process(
        settings, SimulatorOptions(seed=1, rate=args.rate, retention=50_000)
    )
    try:
        kinds = [k.strip() for k in args.streams.split(",") if k.strip()]
        streams = "/".join(f"{s.lower()}@{k}" for s in settings.symbols for k in kinds)
        url = f"{proc.ws_url}/stream?streams={streams}"
        receive = {"sansio": receive_sansio, "asyncio": receive_asyncio, "raw": receive_raw}[
            args.client
        ]
        meter = Meter(args.seconds, args.warmup)
        frames, secs, size, regress = asyncio.run(receive(url, meter))
        stats = proc.stats()
    finally:
        proc.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(
        f"simulator rate={args.rate:.0f}/s streams={args.streams}: {args.client} client "
        f"received {frames} frames "
        f"in {secs:.1f}s = "
        f"{frames / secs:,.0f} frames/s ({size / secs / 2**20:.1f} MiB/s); "
        f"server generated {stats['trades_generated']} frames_sent={stats['frames_sent']} "
        f"slow_consumer_drops={stats['slow_consumer_drops']} id_regressions={regress}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
