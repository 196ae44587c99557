"""``cryptoflow.core.signals``: SIGINT, SIGTERM and SIGHUP set a stop event, from a thread,
never from the handler itself (which could deadlock with the main thread's ``wait``)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from cryptoflow.core.signals import STOP_SIGNALS

# The main thread waits on the event in a tight loop while each signal arrives (the shape
# of up's main loop); it prints what stopped it.
PROGRAM = """
import os, signal, sys, threading
from cryptoflow.core.signals import SignalStop
sig = int(sys.argv[1])
for round in range(200):
    stop = threading.Event()
    SignalStop(stop).install()
    threading.Timer(0.001 * (round % 7), os.kill, (os.getpid(), sig)).start()
    while not stop.wait(0.0005):
        pass
print("stopped", round + 1)
"""


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_each_stop_signal_sets_the_event_while_the_main_thread_waits(sig):
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(int(sig))], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped 200"


def test_the_stop_signals_are_ctrl_c_kill_and_hang_up():
    assert set(STOP_SIGNALS) == {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
