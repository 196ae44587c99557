"""``cryptoflow checkpoints``: each streaming job's checkpoint and where it stands."""

from __future__ import annotations

import argparse

from cryptoflow.core.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "checkpoints",
        help="list each job's checkpoint: last batch, commit time, source position",
        description=(
            "List the streaming checkpoints under CRYPTOFLOW_CHECKPOINT_ROOT: the query id, "
            "the newest planned and committed micro-batch, when it committed, and the source "
            "position of the newest batch (Kafka offsets per partition for the pipeline's "
            "query, Delta version/index for a rebuild from bronze), with the job/source/sink "
            "the checkpoint belongs to. Reads the files only: no Spark, works while the jobs run "
            "(checkpoints on an object store, s3a://, are read through a Spark session's Hadoop "
            "file system, which starts a JVM)."
        ),
    )
    p.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )
    p.set_defaults(handler=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.ops.checkpoints import list_checkpoints
    from pipelines.ops.render import render

    rows = []
    for c in list_checkpoints(settings):
        owner = f"{c.owner.source} -> {c.owner.sink}" if c.owner else ""
        rows.append(
            (
                c.job,
                "yes" if c.exists else "no",
                c.last_batch,
                c.last_committed,
                c.committed_at,
                " | ".join(c.positions),
                owner,
                c.path,
            )
        )
    cols = ("job", "exists", "last_batch", "committed", "committed_at", "position", "owner", "path")
    print(render(cols, rows, args.format))
    return 0
