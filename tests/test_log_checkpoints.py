"""Delta log checkpoints of the streaming tables come from the checkpointer thread, never
from inside a commit (pipelines.log_checkpoints), against real Spark and Delta."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from delta.tables import DeltaTable

from pipelines.log_checkpoints import (
    NO_INLINE_CHECKPOINTS,
    LogCheckpointer,
    checkpoint_in_background,
)
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def _create(spark, path: str, *props: tuple[str, str]) -> None:
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumn("id", "BIGINT")
    for key, value in props:
        builder = builder.property(key, value)
    builder.execute()


def _append(spark, path: str, n: int) -> None:
    for i in range(n):
        spark.range(i, i + 1).write.format("delta").mode("append").save(path)


def _checkpoints(path: str) -> list[int]:
    log = Path(path) / "_delta_log"
    return sorted(int(p.name.split(".")[0]) for p in log.glob("*.checkpoint.parquet"))


def test_checkpoints_are_written_by_the_thread_every_n_commits(spark, tmp_path):
    path = str(tmp_path / "t")
    _create(spark, path, NO_INLINE_CHECKPOINTS)
    checkpointer = LogCheckpointer(spark, every=3, poll_s=0.2)
    checkpointer.watch(path)
    try:
        _append(spark, path, 2)  # versions 1-2: fewer commits than `every`
        checkpointer.start()
        wait_until(lambda: checkpointer.rounds >= 2, 30, what="two rounds of the thread")
        assert _checkpoints(path) == []
        _append(spark, path, 1)  # version 3
        wait_until(lambda: _checkpoints(path) == [3], 60, what="a checkpoint at version 3")
        _append(spark, path, 5)  # versions 4-8: the commits themselves never checkpoint
        assert _checkpoints(path) in ([3], [3, 6], [3, 7], [3, 8])
        wait_until(lambda: len(_checkpoints(path)) == 2, 60, what="a second checkpoint")
    finally:
        checkpointer.stop()
    last = json.loads((Path(path) / "_delta_log" / "_last_checkpoint").read_text())
    assert last["version"] == _checkpoints(path)[-1] >= 6
    assert not checkpointer.is_alive()
    # a fresh log replay starts from the checkpoint and sees every row, time travel too
    spark.catalog.clearCache()
    assert spark.read.format("delta").load(path).count() == 8
    assert spark.read.format("delta").option("versionAsOf", 2).load(path).count() == 2


def test_tables_of_an_earlier_version_stop_checkpointing_inline(spark, settings, tmp_path):
    path = str(tmp_path / "old")
    _create(spark, path, ("delta.checkpointInterval", "2"))
    _append(spark, path, 2)
    assert _checkpoints(path) == [2]  # the commit at version 2 wrote it inline

    checkpoint_in_background(spark, settings.replace(delta_checkpoint_every=1000), path)
    checkpoint_in_background(spark, settings, path)  # again: no second metadata commit
    rows = spark.sql(f"SHOW TBLPROPERTIES delta.`{path}` ('delta.checkpointInterval')").collect()
    assert rows[0]["value"] == NO_INLINE_CHECKPOINTS[1]
    assert DeltaTable.forPath(spark, path).history().count() == 4  # create, 2 appends, ALTER
    _append(spark, path, 3)  # versions 4-6 (4 and 6 were inline checkpoints before)
    assert _checkpoints(path) == [2]
