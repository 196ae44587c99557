"""Small process helpers shared by the embedded services: pid files, ports, polling, Java."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cryptoflow.core.errors import ServiceError

MIN_JAVA = 17


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int, what: str, setting: str) -> None:
    if port_open(host, port):
        raise ServiceError(
            f"port {port} for {what} is already in use by another program: stop it or set "
            f"{setting} to a free port"
        )


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``check`` until it is true, or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}")


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL the process group led by ``pid``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.2)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:  # looked up before any fork: a preexec_fn should do as little as it can
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: children do not follow their parent
    _prctl = None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` after which the child gets ``sig`` when this process dies, even by
    SIGKILL (Linux; elsewhere nothing).

    Linux signals the child when the *thread* that forked it ends: start the child from a
    thread that lives as long as the process (the main thread)."""
    parent = os.getpid()

    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(sig))
            if os.getppid() != parent:  # the parent died before the prctl
                os.kill(os.getpid(), sig)

    return preexec


def java_binary() -> str:
    """Path of a Java >= 17, or a ServiceError that says how to get one."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise ServiceError(
            f"Java {MIN_JAVA}+ is required for Spark and Kafka but was not found: "
            "install it (apt-get install -y openjdk-17-jdk-headless) or set JAVA_HOME"
        )
    if java not in _CHECKED_JAVA:
        _check_java_version(java)
        _CHECKED_JAVA.add(java)
    return java


#: Java binaries whose version was checked (once per process: setup steps and the Spark
#: session both ask; a second ``java -version`` under load only costs time).
_CHECKED_JAVA: set[str] = set()


def _check_java_version(java: str) -> None:
    out = subprocess.run(  # its own session: a stop signal to the command is not for it
        [java, "-version"], capture_output=True, text=True, start_new_session=True
    )
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr)
    major = int(m.group(1)) if m else 0
    if major == 1 and m and m.group(2):  # "1.8.0_x"
        major = int(m.group(2))
    if major < MIN_JAVA:
        said = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[0]
        raise ServiceError(
            f"Java {major or '?'} found at {java} (`java -version` said: {said[:200]}), but "
            f"{MIN_JAVA} or newer is required: install openjdk-17-jdk-headless and point "
            "JAVA_HOME at it"
        )
