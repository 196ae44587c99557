"""Exactly-once Delta appends from ``foreachBatch``, with the batch ledger in the commit log.

Every append a job makes carries ``userMetadata`` ``{"app": <query id>, "batch": N}``. A
batch replayed after a crash (Spark re-runs batch N when its commit log lacks it) finds its
own commit in the table's recent history and skips the append.

Why not Delta's ``txnAppId``/``txnVersion`` options: each such append looks the app up in
the table's ``SetTransaction`` map, and Delta 4.4 builds that map with a full state
reconstruction (a Spark job over the checkpoint and every later commit) for each new table
version. That cost 400-450 ms of every micro-batch here, more than the write itself.

The history is read only when the answer is not known: for the first batch a ledger writes
to a table (after a start, Spark may be replaying), or for a batch id that does not follow
the last one this ledger committed. Within one run, Structured Streaming hands
``foreachBatch`` each batch id once, in order; a failed batch stops the query and the
restarted query builds a new ledger. A failed write also makes the ledger forget the table,
so a retry asks the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from pipelines.jvm import latest_snapshot
from pipelines.ops.files import Files, join

log = logging.getLogger(__name__)

#: How far back in a table's history a replayed batch looks for its own commit. Only the
#: job writes between its commit and the replay, apart from rare maintenance commits.
LOOKBACK = 50


def batch_metadata(app: str, batch: int) -> str:
    """The ``userMetadata`` of a job's commit for (query ``app``, ``batch``)."""
    return json.dumps({"app": app, "batch": batch})


def commit_metadata(spark: SparkSession, path: str, lookback: int) -> Iterator[tuple[int, dict]]:
    """(version, ``userMetadata`` as a dict) of the table's last ``lookback`` commits, newest
    first; commits without JSON-object metadata are left out."""
    history = DeltaTable.forPath(spark, path).history(lookback).select("version", "userMetadata")
    for row in history.collect():
        try:
            meta = json.loads(row.userMetadata or "")
        except ValueError:
            continue
        if isinstance(meta, dict):
            yield row.version, meta


def find_committed_batch(
    spark: SparkSession, path: str, app: str, batch: int, lookback: int = LOOKBACK
) -> int | None:
    """The table version committed by (app, batch) among the last ``lookback`` commits."""
    for version, meta in commit_metadata(spark, path, lookback):
        if meta.get("app") == app and meta.get("batch") == batch:
            return version
    return None


def query_id_reader(checkpoint: str) -> Callable[[SparkSession], str]:
    """A function reading the query id Spark stored in ``<checkpoint>/metadata``. A new
    checkpoint gets a new id, so its batch numbers never collide with older ones. A local
    checkpoint's file is read as a file (a Spark job took a second of a cold JVM's first
    batch), one on an object store through the session's Hadoop file system."""

    def read(spark: SparkSession) -> str:
        text = Files().read_text(join(checkpoint, "metadata")).splitlines()[0]
        return json.loads(text)["id"]

    return read


def created_empty(spark: SparkSession, path: str) -> bool:
    """True when the Delta table at ``path`` has one commit, its creation, which adds no
    file (``createIfNotExists``, as ``pipelines.job.ensure_lake`` makes the tables): no
    batch has committed to it and it holds no row. Asked without a Spark job, which on a
    cold JVM cost a fresh lake's first batch ~3 s (the history and a scan of silver): the
    log's version from a listing, then commit 0's actions read as a file (on an object
    store, through the session's Hadoop file system)."""
    snapshot = latest_snapshot(spark, path)
    if snapshot.version() != 0:
        return False
    try:
        lines = Files().read_text(join(path, "_delta_log", f"{0:020d}.json")).splitlines()
    except OSError:
        return False
    return not any("add" in json.loads(line) for line in lines if line.strip())


class CommitLedger:
    """Which batches of one streaming query are committed to which Delta tables."""

    def __init__(self, app_id: Callable[[SparkSession], str]) -> None:
        self._app_id = app_id
        self._app: str | None = None
        self._last: dict[str, int] = {}  # table path -> last batch id committed by this ledger
        self._asked: dict[tuple[str, int], int | None] = {}

    def app(self, spark: SparkSession) -> str:
        """The query id the commits are tagged with (read once)."""
        if self._app is None:
            self._app = self._app_id(spark)
        return self._app

    def committed(self, spark: SparkSession, path: str, batch_id: int) -> int | None:
        """The version of ``path`` that ``batch_id`` committed, or None if it did not."""
        last = self._last.get(path)
        if last is not None and batch_id > last:
            return None  # a new batch of this run
        key = (path, batch_id)
        if key not in self._asked:
            self._asked[key] = (
                None
                if created_empty(spark, path)
                else find_committed_batch(spark, path, self.app(spark), batch_id)
            )
        return self._asked[key]

    def append(self, df: DataFrame, path: str, batch_id: int) -> bool:
        """Append ``df`` to the Delta table at ``path`` as ``batch_id``'s commit, unless it
        made that commit already; True when it wrote."""
        spark = df.sparkSession
        done = self.committed(spark, path, batch_id)
        if done is not None:
            log.info("batch=%d already committed to %s as version %d: skipped", batch_id, path,
                     done)  # fmt: skip
            self._last[path] = batch_id
            return False
        meta = batch_metadata(self.app(spark), batch_id)
        try:
            df.write.format("delta").mode("append").option("userMetadata", meta).save(path)
        except BaseException:
            self._last.pop(path, None)  # the commit may have happened: ask the log next time
            raise
        self._last[path] = batch_id
        self._asked = {k: v for k, v in self._asked.items() if k[0] != path}
        return True
