"""Binaries built from source once per machine into the tool cache: SeaweedFS's ``weed``.

The embedded S3 server (``cryptoflow.core.services.s3``) is SeaweedFS (Apache-2.0), built
with Go from the Go module proxy at a pinned version. The build takes minutes on two cores,
so its binary is cached under a versioned name (``<tool_cache>/weed-<version>``) and only
the first run on a machine builds it (``cryptoflow setup``, ``scripts/bootstrap.sh --test``).

``python -m cryptoflow.core.tools`` builds it where missing and prints its path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptoflow.core.config import load_settings
from cryptoflow.core.errors import ServiceError

log = logging.getLogger(__name__)

SEAWEEDFS_MODULE = "github.com/seaweedfs/seaweedfs"
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
#: Where Go usually lives when it is not on PATH (the official tarball's place).
GO_FALLBACK = Path("/usr/local/go/bin/go")


def weed_path(tool_cache: Path) -> Path:
    """Where the pinned ``weed`` is cached (it may not be built yet)."""
    return tool_cache / f"weed-{SEAWEEDFS_VERSION}"


def go_binary() -> str:
    """The Go toolchain, or a ServiceError saying how to get one."""
    found = shutil.which("go") or (str(GO_FALLBACK) if GO_FALLBACK.exists() else None)
    if found is None:
        raise ServiceError(
            "Go is needed once to build the embedded S3 server (SeaweedFS) and was not found: "
            "install Go 1.26+ (https://go.dev/dl, into /usr/local/go) or set "
            "CRYPTOFLOW_S3_ENDPOINT to an external S3 endpoint"
        )
    return found


def ensure_weed(tool_cache: Path) -> tuple[Path, bool]:
    """The cached ``weed`` binary, built first if missing. Returns (path, built?)."""
    target = weed_path(tool_cache)
    if target.exists():
        return target, False
    go = go_binary()
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    started = time.monotonic()
    source = _download(go, env)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.part")
    with tempfile.TemporaryDirectory(prefix="weed-build-") as tmp:
        # A copy: the module cache is read-only, and the module's go.mod has `replace`
        # directives, which `go install module@version` refuses.
        work = Path(tmp) / "src"
        shutil.copytree(source, work)
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        cmd = [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging), "./weed"]
        proc = subprocess.run(  # its own session: a stop signal to the caller is not for it
            cmd, cwd=work, env=env, capture_output=True, text=True, start_new_session=True
        )
    if proc.returncode != 0:
        staging.unlink(missing_ok=True)
        raise ServiceError(f"building SeaweedFS failed: {proc.stderr.strip()[-600:]}")
    staging.replace(target)  # atomic: a concurrent build writes the same program
    log.info("built weed path=%s seconds=%.0f", target, time.monotonic() - started)
    return target, True


def _download(go: str, env: dict[str, str]) -> Path:
    """The pinned SeaweedFS module's source directory in Go's module cache."""
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"{SEAWEEDFS_MODULE}@{SEAWEEDFS_VERSION}"],
        env=env, capture_output=True, text=True, start_new_session=True,
    )  # fmt: skip
    info = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or "Dir" not in info:
        reason = info.get("Error") or proc.stderr.strip()[-400:]
        raise ServiceError(
            f"could not download {SEAWEEDFS_MODULE}@{SEAWEEDFS_VERSION} from the Go module "
            f"proxy (GOPROXY; is it reachable?): {reason}"
        )
    return Path(info["Dir"])


def main() -> int:
    """Build the cached ``weed`` where missing; print its path."""
    started = time.monotonic()
    try:
        path, built = ensure_weed(load_settings().tool_cache)
    except ServiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{'built' if built else 'cached'} {path} ({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
