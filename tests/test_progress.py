"""Query progress read as JSON (``pipelines.progress``): the same numbers as PySpark's
field-by-field objects, from a real streaming query."""

from __future__ import annotations

import json
import threading

from pyspark.sql import functions as F
from pyspark.sql.streaming.listener import StreamingQueryProgress

from pipelines.progress import JsonProgressListener, last_progress, stop_between_batches
from tests.conftest import wait_until


class Collect(JsonProgressListener):
    def __init__(self) -> None:
        self.events: list = []
        self.lock = threading.Lock()

    def onQueryStarted(self, event) -> None:  # noqa: N802
        pass

    def onQueryProgress(self, event) -> None:  # noqa: N802
        with self.lock:
            self.events.append(event.progress)

    def onQueryIdle(self, event) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event) -> None:  # noqa: N802
        pass


def test_progress_events_and_last_progress_match_the_jvm(spark, unique):
    listener = Collect()
    spark.streams.addListener(listener)
    query = (
        spark.readStream.format("rate")
        .option("rowsPerSecond", 20)
        .load()
        .observe("seen", F.count(F.lit(1)).alias("rows"))
        .writeStream.queryName(f"progress_{unique}")
        .format("noop")
        .trigger(processingTime="200 milliseconds")
        .start()
    )
    try:
        wait_until(
            lambda: sum(1 for p in listener.events if p.name == query.name and p.numInputRows) >= 2,
            timeout=120,
            what="two progress events with rows",
        )
        stop_between_batches([query])
    finally:
        spark.streams.removeListener(listener)
        if query.isActive:
            query.stop()
    ours = [p for p in listener.events if p.name == query.name]
    assert [p.batchId for p in ours] == sorted({p.batchId for p in ours})
    p = next(p for p in ours if p.numInputRows)
    assert isinstance(p, StreamingQueryProgress)
    assert str(p.id) == query.id and p.sources[0].numInputRows == p.numInputRows
    assert p.observedMetrics["seen"]["rows"] == p.numInputRows
    assert p.durationMs["triggerExecution"] >= 0 and p.sink.numOutputRows is not None

    last = last_progress(query)
    assert last == json.loads(query._jsq.lastProgress().json())
    assert last["batchId"] == query.lastProgress.batchId
    assert last["numInputRows"] == query.lastProgress.numInputRows
