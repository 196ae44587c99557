"""A short simulated pipeline run for dashboard tests: ``cryptoflow up --source sim`` as a
user starts it, on the session's services with its own topic, lake and checkpoints."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptoflow.core.config import Settings
from cryptoflow.core.db import connect
from cryptoflow.core.services import postgres
from cryptoflow.supervisor import child_env
from tests.conftest import free_port

CLI = str(Path(sys.executable).parent / "cryptoflow")
TABLES = ("raw_trades", "metrics", "quarantine", "pipeline_batches", "dq_results")


class SimRun:
    """``cryptoflow up --source sim`` in the background, stopped with Ctrl-C (SIGINT)."""

    def __init__(self, settings: Settings, workdir: Path, rate: int = 20):
        self.settings = settings.replace(
            source="sim",
            streams="trade",
            kafka_topic_prefix=f"dashboard.{workdir.name}",
            lake_root=str(workdir / "lake"),
            checkpoint_root=str(workdir / "checkpoints"),
            sim_port=free_port(),
        )
        self.started_at = datetime.now(UTC)
        self.log = workdir / "up.log"
        argv = [CLI, "up", "--source", "sim", "--sim-rate", str(rate), "--sim-seed", "11",
                "--sim-malformed-every", "25", "--status-every", "5"]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, cwd=workdir, env=child_env(self.settings),
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def counts(self) -> dict[str, int]:
        """Rows this run has written so far, per serving table."""
        with connect(postgres.admin_dsn(self.settings)) as conn, conn.cursor() as cur:
            cur.execute(
                """SELECT (SELECT count(*) FROM raw_trades WHERE mirrored_at >= %(s)s),
                          (SELECT count(*) FROM metrics WHERE mirrored_at >= %(s)s),
                          (SELECT count(*) FROM quarantine WHERE mirrored_at >= %(s)s),
                          (SELECT count(*) FROM pipeline_batches WHERE recorded_at >= %(s)s),
                          (SELECT count(*) FROM dq_results WHERE recorded_at >= %(s)s)""",
                {"s": self.started_at},
            )
            row = cur.fetchone()
        conn.close()
        return dict(zip(TABLES, row, strict=True))

    def wait_for_data(self, timeout: float = 420) -> dict[str, int]:
        """Poll until the streaming tables hold rows of this run (a few gold windows), then
        validate silver and gold once with `cryptoflow validate` so dq_results has a run."""
        deadline = time.monotonic() + timeout
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cryptoflow up exited early:\n{self.tail()}")
            counts = self.counts()
            if counts["metrics"] >= 9 and all(counts[t] for t in TABLES[:4]):
                break
            time.sleep(2)
        else:
            raise AssertionError(
                f"no serving rows of the simulated run after {timeout}s ({counts}):\n" + self.tail()
            )
        validate = subprocess.run(
            [CLI, "validate", "--table", "all"], cwd=self.log.parent,
            env=child_env(self.settings), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert validate.returncode in (0, 1), validate.stdout + validate.stderr
        return self.counts()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 90) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def more(self) -> None:
        """Newer rows arrive by themselves while the run goes on."""
