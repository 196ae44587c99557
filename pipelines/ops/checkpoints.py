"""Streaming checkpoints: who owns one, and where each job stands.

Every job's checkpoint directory holds, beside Spark's own files, ``_cryptoflow_owner.json``
naming the job, its source and its sink. ``ensure_checkpoint_owner`` writes it at a job's
first start and verifies it at every later one, so a job never resumes from offsets that
belong to another query or table. ``read_checkpoint`` reads Spark's ``metadata``,
``offsets/<batch>`` and ``commits/<batch>`` files for ``cryptoflow checkpoints``. Local
checkpoints are read as files; those on an object store (``s3a://``) through Hadoop's file
system in a Spark session's JVM (``pipelines.ops.files``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import CryptoflowError
from pipelines.ops.files import Files, join

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


def read_owner(checkpoint: str, files: Files | None = None) -> Owner | None:
    files = files or Files()
    try:
        data = json.loads(files.read_text(join(checkpoint, OWNER_FILE)))
    except FileNotFoundError:
        return None
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
    owner files existed is adopted. Local and object-store checkpoints alike.
    """
    checkpoint = settings.checkpoint_path(job)
    files = Files(settings)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    wanted = Owner(job, source, sink, now, now, socket.gethostname(), os.getpid())
    found = read_owner(checkpoint, files)
    if found is not None and not found.same_query(wanted):
        raise CheckpointConflict(conflict_message(checkpoint, found, wanted))
    if found is not None:
        wanted = Owner(job, source, sink, found.created_at, now, wanted.host, wanted.pid)
    elif files.exists(join(checkpoint, "metadata")):
        log.info("checkpoint adopted (no owner file yet) job=%s checkpoint=%s", job, checkpoint)
    files.write_text(join(checkpoint, OWNER_FILE), json.dumps(asdict(wanted), indent=1) + "\n")
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


def _batch_files(files: Files, directory: str) -> dict[int, datetime]:
    """Batch id -> modification time of the ``offsets/`` or ``commits/`` files."""
    return {int(name): t for name, t in files.list_files(directory).items() if name.isdigit()}


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


def read_checkpoint(job: str, checkpoint: str, files: Files | None = None) -> CheckpointInfo:
    """Where the query checkpointed at ``checkpoint`` stands."""
    files = files or Files()
    try:
        metadata = files.read_text(join(checkpoint, "metadata"))
    except FileNotFoundError:
        return CheckpointInfo(job, checkpoint, False, owner=read_owner(checkpoint, files))
    query_id = json.loads(metadata.splitlines()[0]).get("id")
    offsets = _batch_files(files, join(checkpoint, "offsets"))
    commits = _batch_files(files, join(checkpoint, "commits"))
    last = max(offsets) if offsets else None
    done = max(commits) if commits else None
    committed_at = commits[done] if done is not None else None
    positions: tuple[str, ...] = ()
    if last is not None:
        positions = tuple(
            parse_offsets_file(files.read_text(join(checkpoint, "offsets", str(last))))
        )
    owner = read_owner(checkpoint, files)
    return CheckpointInfo(
        job, checkpoint, True, query_id, last, done, committed_at, positions, owner
    )


def list_checkpoints(settings: Settings) -> list[CheckpointInfo]:
    """The pipeline's checkpoints (``JOBS``), then any other query checkpoint under the root."""
    files = Files(settings)
    names = list(JOBS)
    names += [n for n in files.list_dirs(settings.checkpoints) if n not in JOBS]
    return [read_checkpoint(name, settings.checkpoint_path(name), files) for name in names]


def job_io(settings: Settings, job: str) -> tuple[str, str]:
    """(source, sink) a checkpoint belongs to: what the pipeline's query and a rebuild pass
    to ``ensure_checkpoint_owner``."""
    if job == "trades":
        return f"kafka:{settings.kafka_topic}", settings.table_path("bronze")
    if job == "replay-silver":
        return settings.table_path("bronze"), settings.table_path("silver")
    raise ValueError(f"job_io: unknown job {job!r}")
