"""A local exchange that speaks Binance's spot protocol: stream WebSocket and REST on one port.

Python API (details in docs/simulator.md)::

    from ingestion.simulator import SimulatorOptions, run_simulator_in_thread

    with run_simulator_in_thread(settings, SimulatorOptions(port=0, seed=7, max_trades=500,
                                                            record=path)) as sim:
        sim.ws_url, sim.rest_url, sim.stats(), sim.finished, sim.drop_connections()
    read_record(path), read_record(path, "kline_1m"), read_record(path, "kline_faults")

    proc = start_simulator_process(settings, SimulatorOptions(seed=7, rate=1000))
    ...; proc.stop()   # or proc.kill() for a crash
"""

from ingestion.simulator.options import SimulatorOptions
from ingestion.simulator.record import read_record, record_path
from ingestion.simulator.runner import (
    SimulatorHandle,
    SimulatorProcess,
    run_simulator_in_thread,
    start_simulator_process,
)
from ingestion.simulator.server import Simulator

__all__ = [
    "Simulator",
    "SimulatorHandle",
    "SimulatorOptions",
    "SimulatorProcess",
    "read_record",
    "record_path",
    "run_simulator_in_thread",
    "start_simulator_process",
]
