"""Streaming checkpoints: who owns one, and where each job stands.

Every job's checkpoint directory holds, beside Spark's own files, ``_cryptoflow_owner.json``
naming the job, its source and its sink. ``ensure_checkpoint_owner`` writes it at a job's
first start and verifies it at every later one, so a job never resumes from offsets that
belong to another query or table. ``read_checkpoint`` reads Spark's ``metadata``,
``offsets/<batch>`` and ``commits/<batch>`` files (local or mounted paths) for
``cryptoflow checkpoints``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import CryptoflowError

log = logging.getLogger(__name__)
OWNER_FILE = "_cryptoflow_owner.json"
#: The checkpoints the pipeline keeps: its query's, and the last rebuild's (``replay``).
JOBS = ("trades", "replay-silver")


class CheckpointConflict(CryptoflowError):
    """A job was pointed at a checkpoint made by another query or for another table."""


@dataclass(frozen=True)
class Owner:
    """What a checkpoint belongs to, plus who started it last (for replay's safety check)."""

    job: str
    source: str
    sink: str
    created_at: str = ""
    started_at: str = ""
    host: str = ""
    pid: int = 0

    def same_query(self, other: Owner) -> bool:
        return (self.job, self.source, self.sink) == (other.job, other.source, other.sink)


def local_path(path: str) -> Path | None:
    """``path`` as a local filesystem path, or None for an object-store URI (s3a://...)."""
    if path.startswith("file:"):
        return Path(urlsplit(path).path)
    if "://" in path:
        return None
    return Path(path)


def read_owner(checkpoint: str) -> Owner | None:
    path = local_path(checkpoint)
    if path is None or not (path / OWNER_FILE).is_file():
        return None
    data = json.loads((path / OWNER_FILE).read_text())
    return Owner(**{k: data[k] for k in Owner.__dataclass_fields__ if k in data})


def conflict_message(checkpoint: str, found: Owner, wanted: Owner) -> str:
    return (
        f"checkpoint {checkpoint} belongs to job {found.job} ({found.source} -> {found.sink}), "
        f"not to job {wanted.job} ({wanted.source} -> {wanted.sink}): point "
        "CRYPTOFLOW_CHECKPOINT_ROOT / CRYPTOFLOW_LAKE_ROOT back at the tables this checkpoint "
        f"was made for, or move {checkpoint} aside to start {wanted.job} from scratch (it then "
        "reprocesses its whole source)"
    )


def ensure_checkpoint_owner(settings: Settings, job: str, source: str, sink: str) -> Owner:
    """Claim ``settings.checkpoint_path(job)`` for (job, source, sink), or refuse.

    First start: writes the owner file. Later starts: the file must name the same job,
    source and sink, else ``CheckpointConflict`` says what to do. A checkpoint made before
    owner files existed is adopted. Object-store checkpoints are not checked (logged).
    """
    checkpoint = settings.checkpoint_path(job)
    path = local_path(checkpoint)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    wanted = Owner(job, source, sink, now, now, socket.gethostname(), os.getpid())
    if path is None:
        log.warning("checkpoint owner not checked (not a local path) checkpoint=%s", checkpoint)
        return wanted
    found = read_owner(checkpoint)
    if found is not None and not found.same_query(wanted):
        raise CheckpointConflict(conflict_message(checkpoint, found, wanted))
    if found is not None:
        wanted = Owner(job, source, sink, found.created_at, now, wanted.host, wanted.pid)
    elif (path / "metadata").exists():
        log.info("checkpoint adopted (no owner file yet) job=%s checkpoint=%s", job, checkpoint)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{OWNER_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(wanted), indent=1) + "\n")
    tmp.replace(path / OWNER_FILE)
    return wanted


# ----- reading where a job stands


@dataclass(frozen=True)
class CheckpointInfo:
    job: str
    path: str
    exists: bool
    query_id: str | None = None
    last_batch: int | None = None  # newest batch planned (offsets/)
    last_committed: int | None = None  # newest batch completed (commits/)
    committed_at: datetime | None = None
    positions: tuple[str, ...] = ()  # one per source, of the newest planned batch
    owner: Owner | None = None


def _batch_files(directory: Path) -> dict[int, Path]:
    if not directory.is_dir():
        return {}
    return {int(p.name): p for p in directory.iterdir() if p.name.isdigit()}


def describe_offset(offset: object) -> str:
    """One source's offset as text: Kafka partitions, a Delta version/index, or raw JSON."""
    if isinstance(offset, dict) and "reservoirVersion" in offset:
        return f"delta version={offset['reservoirVersion']} index={offset.get('index')}"
    if isinstance(offset, dict) and offset and all(isinstance(v, dict) for v in offset.values()):
        parts = []
        for topic, partitions in offset.items():
            ordered = sorted(partitions.items(), key=lambda kv: int(kv[0]))
            parts.append(f"kafka {topic} " + " ".join(f"p{p}={o}" for p, o in ordered))
        return "; ".join(parts)
    return json.dumps(offset, separators=(",", ":"))


def parse_offsets_file(text: str) -> list[str]:
    """Source positions from an ``offsets/<batch>`` file (``v1``, batch metadata, sources)."""
    lines = text.splitlines()
    out = []
    for line in lines[2:]:
        line = line.strip()
        out.append("-" if line in ("", "-") else describe_offset(json.loads(line)))
    return out


def read_checkpoint(job: str, checkpoint: str) -> CheckpointInfo:
    """Where the query checkpointed at ``checkpoint`` stands."""
    path = local_path(checkpoint)
    if path is None or not (path / "metadata").is_file():
        owner = read_owner(checkpoint) if path is not None else None
        return CheckpointInfo(job, checkpoint, False, owner=owner)
    query_id = json.loads((path / "metadata").read_text().splitlines()[0]).get("id")
    offsets = _batch_files(path / "offsets")
    commits = _batch_files(path / "commits")
    last = max(offsets) if offsets else None
    done = max(commits) if commits else None
    committed_at = (
        datetime.fromtimestamp(commits[done].stat().st_mtime, UTC) if done is not None else None
    )
    positions = tuple(parse_offsets_file(offsets[last].read_text())) if last is not None else ()
    return CheckpointInfo(
        job, checkpoint, True, query_id, last, done, committed_at, positions, read_owner(checkpoint)
    )


def list_checkpoints(settings: Settings) -> list[CheckpointInfo]:
    """The pipeline's checkpoints (``JOBS``), then any other query checkpoint under the root."""
    names = list(JOBS)
    root = local_path(settings.checkpoints)
    if root is not None and root.is_dir():
        names += sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in JOBS)
    return [read_checkpoint(name, settings.checkpoint_path(name)) for name in names]


def job_io(settings: Settings, job: str) -> tuple[str, str]:
    """(source, sink) a checkpoint belongs to: what the pipeline's query and a rebuild pass
    to ``ensure_checkpoint_owner``."""
    if job == "trades":
        return f"kafka:{settings.kafka_topic}", settings.table_path("bronze")
    if job == "replay-silver":
        return settings.table_path("bronze"), settings.table_path("silver")
    raise ValueError(f"job_io: unknown job {job!r}")
