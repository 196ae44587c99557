"""Ways to run the simulator: in a background thread of a test, or as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ServiceError
from ingestion.simulator.options import SimulatorOptions
from ingestion.simulator.server import Simulator


class SimulatorHandle:
    """A simulator running in a background thread (see ``run_simulator_in_thread``)."""

    def __init__(self, sim: Simulator, loop: asyncio.AbstractEventLoop) -> None:
        self._sim = sim
        self._loop = loop
        host = sim.options.host
        self.host = host
        self.port = sim.port
        self.ws_url = f"ws://{host}:{self.port}"
        self.rest_url = f"http://{host}:{self.port}"
        self.seed = sim.seed
        self.options = sim.options

    def client_settings(self, settings: Settings) -> Settings:
        """``settings`` pointed at this simulator (source=sim, its host, port and symbols)."""
        return settings.replace(
            source="sim",
            sim_host=self.host,
            sim_port=self.port,
            binance_ws_url="",
            binance_rest_url="",
            symbols=list(self.options.symbols),
        )

    def _call(self, fn: Any) -> Any:
        async def run() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def stats(self) -> dict[str, Any]:
        """Counters: trades generated / streamed / skipped, frames, connections, REST..."""
        return self._call(self._sim.stats)

    @property
    def finished(self) -> bool:
        """True once every symbol generated ``max_trades`` trades."""
        return self._sim.finished.is_set()

    def drop_connections(self) -> None:
        """Abort every client connection now (a network failure)."""
        self._call(self._sim.drop_all)

    def announce_shutdown(self) -> None:
        """Send ``serverShutdown`` to every client now; they are closed after the grace."""
        self._call(self._sim.announce_shutdown)


@contextlib.contextmanager
def run_simulator_in_thread(
    settings: Settings, options: SimulatorOptions | None = None, timeout: float = 30
) -> Iterator[SimulatorHandle]:
    """Run a simulator in a daemon thread; yields once it accepts connections, stops on exit.

    ``options.port=0`` picks a free port (read it from ``handle.port``).
    """
    sim = Simulator(settings, options or SimulatorOptions())
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            await sim.start()
        except BaseException as e:
            failure.append(e)
            ready.set()
            return
        ready.set()
        try:
            await stop.wait()
        finally:
            await sim.stop()

    thread = threading.Thread(
        target=loop.run_until_complete, args=(main(),), name="simulator", daemon=True
    )
    thread.start()
    if not ready.wait(timeout):
        raise ServiceError(f"simulator did not start within {timeout}s")
    if failure:
        thread.join(5)
        raise ServiceError(f"simulator failed to start: {failure[0]}") from failure[0]
    try:
        yield SimulatorHandle(sim, loop)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


_MAIN = "import sys; from cryptoflow.cli import main; sys.exit(main())"


class SimulatorProcess:
    """``cryptoflow simulate`` running as a child process (see ``start_simulator_process``)."""

    def __init__(self, proc: subprocess.Popen, host: str, port: int, log_path: Path) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.ws_url = f"ws://{host}:{port}"
        self.rest_url = f"http://{host}:{port}"
        self.log_path = log_path

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.rest_url}/sim/stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait: the simulator flushes its record and gives back unused ids."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash (ids reserved by this run are never reused)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulator_process(
    settings: Settings, options: SimulatorOptions | None = None, timeout: float = 60
) -> SimulatorProcess:
    """Start ``cryptoflow simulate`` with ``options`` and return once it answers REST pings.

    The child gets every setting (data dir, host, port, symbols...) as ``CRYPTOFLOW_*``
    environment variables; its log goes to ``<data_dir>/simulator/sim-<port>.log``.
    """
    opts = (options or SimulatorOptions()).resolve(settings)
    if opts.port == 0:
        raise ServiceError(
            "start_simulator_process needs a concrete port (options.port or settings.sim_port)"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOFLOW_")}
    child = settings.replace(sim_host=opts.host, sim_port=opts.port, symbols=list(opts.symbols))
    env.update(child.to_env())
    flags = SimulatorOptions(**{**opts.__dict__, "host": None, "port": None, "symbols": None})
    log_dir = Path(settings.data_dir) / "simulator"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"sim-{opts.port}.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", _MAIN, "simulate", *flags.to_cli_args()],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    handle = SimulatorProcess(proc, opts.host, opts.port, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServiceError(f"simulator exited with {proc.returncode}: {tail.strip()}")
        try:
            with urllib.request.urlopen(f"{handle.rest_url}/api/v3/ping", timeout=2):
                return handle
        except OSError:
            if time.monotonic() > deadline:
                handle.kill()
                raise ServiceError(
                    f"simulator not answering on port {opts.port} after {timeout}s"
                ) from None
            time.sleep(0.1)
