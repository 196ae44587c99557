"""The embedded S3 server: SeaweedFS (``weed server``: one master, one volume server, a filer
and the S3 gateway in one process) on loopback, data under ``<data_dir>/s3``.

It runs when the lake or the checkpoints are on ``s3a://`` and no external
``CRYPTOFLOW_S3_ENDPOINT`` is set (``Settings.embedded_s3``). Its one identity's keys are
generated at the first start into ``credentials.json`` (or are the configured
``CRYPTOFLOW_S3_ACCESS_KEY`` / ``..._SECRET_KEY``); the buckets the s3a:// roots name are
created at every start when missing. Only the S3 port is a setting: the internal ports
(master, volume, filer and their gRPC ports) are chosen free at the first start and kept in
``ports.json`` (chosen anew when another program took one meanwhile).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptoflow.core.config import Settings, s3a_bucket
from cryptoflow.core.errors import ServiceError
from cryptoflow.core.services.process import (
    ensure_port_free,
    pid_alive,
    port_open,
    read_pid,
    stop_pid,
    wait_for,
)
from cryptoflow.core.tools import weed_path

log = logging.getLogger(__name__)
HOST = "127.0.0.1"
#: The internal ports of ``weed server``, beside the S3 port (a setting).
INTERNAL_PORTS = (
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3_grpc",
)


@dataclass(frozen=True)
class S3Paths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def identities(self) -> Path:
        return self.root / "identities.json"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials.json"

    @property
    def ports(self) -> Path:
        return self.root / "ports.json"

    @property
    def pid(self) -> Path:
        return self.root / "weed.pid"

    @property
    def log(self) -> Path:
        return self.root / "weed.log"


def paths(s: Settings) -> S3Paths:
    return S3Paths(s.data_dir.resolve() / "s3")


def credentials(s: Settings) -> tuple[str, str]:
    """(access key, secret key) of the s3a:// roots: the configured ones, else the embedded
    server's own (generated at the first call); ("", "") for an external endpoint without
    keys, which leaves them to Hadoop's default AWS credential chain."""
    if s.s3_access_key or s.s3_secret_key or not s.embedded_s3:
        return s.s3_access_key, s.s3_secret_key
    f = paths(s).credentials
    if not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        keys = {"access_key": "cf" + secrets.token_hex(9), "secret_key": secrets.token_urlsafe(30)}
        try:
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # a concurrent first call wrote them
            pass
        else:
            with os.fdopen(fd, "w") as out:
                json.dump(keys, out)
    keys = json.loads(f.read_text())
    return keys["access_key"], keys["secret_key"]


def buckets(s: Settings) -> list[str]:
    """The buckets the s3a:// roots name, in order, once each."""
    return list(dict.fromkeys(s3a_bucket(r) for r in s.s3a_roots))


def _ports(s: Settings, p: S3Paths) -> dict[str, int]:
    """The internal ports: those of ``ports.json`` while all are free, else new free ones
    (saved). They may change between starts: clients only know the S3 port."""
    if p.ports.exists():
        kept: dict[str, int] = json.loads(p.ports.read_text())
        if not any(port_open(HOST, port) for port in kept.values()):
            return kept
        log.info("s3 internal ports taken by another program, choosing new ones")
    from socket import socket

    held = []
    for _ in INTERNAL_PORTS:  # all bound at once: seven different ports
        sock = socket()
        sock.bind((HOST, 0))
        held.append(sock)
    chosen = {name: sock.getsockname()[1] for name, sock in zip(INTERNAL_PORTS, held, strict=True)}
    for sock in held:
        sock.close()
    p.ports.write_text(json.dumps(chosen, indent=1) + "\n")
    return chosen


def _identities(access_key: str, secret_key: str) -> str:
    identity = {
        "name": "cryptoflow",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    return json.dumps({"identities": [identity]}, indent=1) + "\n"


def _command(s: Settings, p: S3Paths, ports: dict[str, int], weed: Path) -> list[str]:
    return [
        str(weed), "server", f"-dir={p.data}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        "-master.volumeSizeLimitMB=1024", "-master.telemetry=false",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        "-volume.max=0", "-volume.index=leveldb", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3", f"-s3.port={s.s3_port}", f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={p.identities}",
    ]  # fmt: skip


def running(s: Settings) -> bool:
    return pid_alive(read_pid(paths(s).pid))


def start(s: Settings) -> bool:
    """Start SeaweedFS unless it runs, and create the buckets of the s3a:// roots. Returns
    True when it was started. The ``weed`` binary must be built (``cryptoflow setup``)."""
    p = paths(s)
    if running(s):
        ensure_buckets(s)
        return False
    weed = weed_path(s.tool_cache)
    if not weed.exists():
        raise ServiceError(
            f"the SeaweedFS binary is missing at {weed}: run `cryptoflow setup` once (it builds "
            "it with Go, minutes on two cores) or set CRYPTOFLOW_S3_ENDPOINT to an external S3"
        )
    ensure_port_free(HOST, s.s3_port, "the S3 server", "CRYPTOFLOW_S3_PORT")
    p.data.mkdir(parents=True, exist_ok=True)
    ports = _ports(s, p)
    p.identities.write_text(_identities(*credentials(s)))
    p.identities.chmod(0o600)
    with open(p.log, "ab") as out:
        proc = subprocess.Popen(
            _command(s, p, ports, weed),
            cwd=p.root, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    p.pid.write_text(f"{proc.pid}\n")

    def ready() -> bool:
        if proc.poll() is not None:
            raise ServiceError(
                f"SeaweedFS exited with code {proc.returncode} while starting; see {p.log}"
            )
        return healthy(s)

    try:
        wait_for(ready, 120, f"the S3 server on {HOST}:{s.s3_port}", interval=0.3)
        ensure_buckets(s)
    except BaseException:
        stop(s)  # not half-started
        raise
    log.info("s3 started pid=%d port=%d buckets=%s", proc.pid, s.s3_port, ",".join(buckets(s)))
    return True


def stop(s: Settings) -> bool:
    pid = read_pid(paths(s).pid)
    if not pid_alive(pid):
        return False
    assert pid is not None
    stop_pid(pid, timeout=30)
    paths(s).pid.unlink(missing_ok=True)
    return True


def healthy(s: Settings, timeout: float = 3.0) -> bool:
    """True when the endpoint answers an S3 request (an anonymous listing is refused in S3's
    XML: that is an answer)."""
    url = s.s3_url
    if url.startswith("http://127.0.0.1") and not port_open(HOST, s.s3_port):
        return False
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/", timeout=timeout) as resp:
            body = resp.read(2048)
    except urllib.error.HTTPError as e:
        body = e.read(2048)
    except OSError:
        return False
    return b"<?xml" in body or b"ListAllMyBucketsResult" in body


def shell(s: Settings, script: str) -> str:
    """Run ``script`` (one command a line) in ``weed shell`` against the embedded server."""
    ports = json.loads(paths(s).ports.read_text())
    proc = subprocess.run(
        # host:port.grpcPort: the gRPC ports are not the default port + 10000
        [str(weed_path(s.tool_cache)), "shell",
         f"-master={HOST}:{ports['master']}.{ports['master_grpc']}",
         f"-filer={HOST}:{ports['filer']}.{ports['filer_grpc']}"],
        input=script, capture_output=True, text=True, timeout=120, start_new_session=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise ServiceError(f"weed shell failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return proc.stdout


def ensure_buckets(s: Settings) -> list[str]:
    """Create the buckets of the s3a:// roots that are missing; returns those created."""
    wanted = buckets(s)
    if not wanted:
        return []
    created: list[str] = []
    failures: list[ServiceError] = []

    def attempt() -> bool:  # the master may still be electing itself, the filer joining it
        try:
            listed = shell(s, "s3.bucket.list\n")
            present = {ln.split()[0] for ln in listed.splitlines() if ln.strip()}
            missing = [b for b in wanted if b not in present]
            if not missing:
                return True
            out = shell(s, "".join(f"s3.bucket.create -name {b}\n" for b in missing))
        except ServiceError as e:
            failures.append(e)
            return False
        created.extend(b for b in missing if b not in created)
        log.info("s3 buckets created=%s shell=%s", ",".join(missing), out.strip()[-200:])
        return False

    try:
        wait_for(attempt, 120, f"the buckets {', '.join(wanted)} in SeaweedFS", interval=0.5)
    except ServiceError as e:
        raise ServiceError(f"{e}: {failures[-1] if failures else 'no answer'}") from e
    return created
