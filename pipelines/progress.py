"""Progress of running queries: one log line per micro-batch and a periodic status line."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener
from pyspark.sql.streaming.listener import JStreamingQueryListener, QueryProgressEvent

log = logging.getLogger("pipelines.progress")


class JsonProgressListener(StreamingQueryListener):
    """A listener whose progress events cross Py4J once, as the progress's JSON.

    PySpark builds ``event.progress`` from the JVM object one field at a time, some fifty
    Py4J round trips: ~60 ms per event against ~1 ms on two idle cores, 244 ms against
    2.5 ms on busy ones. ``fromJson`` (what Spark Connect uses) gives the same object from
    the JSON."""

    @property
    def _jlistener(self):  # PySpark's hook that wraps the listener for the JVM
        if not hasattr(self, "_jlistenerobj"):
            from pyspark import SparkContext

            jvm = SparkContext._jvm
            if jvm is None:  # PySpark asks for it only when adding the listener to a session
                raise RuntimeError("no running Spark context to register the listener with")
            self._jlistenerobj = jvm.PythonStreamingQueryListenerWrapper(_JsonEvents(self))
        return self._jlistenerobj


class _JsonEvents(JStreamingQueryListener):
    def onQueryProgress(self, jevent) -> None:  # noqa: N802 (Spark's API)
        try:
            progress = json.loads(jevent.progress().json())
            event = QueryProgressEvent.fromJson({"progress": progress})
        except KeyError:  # the JSON leaves out NaN rates (a first batch): PySpark's way
            event = QueryProgressEvent.fromJObject(jevent)
        self.pylistener.onQueryProgress(event)


def last_progress(query: StreamingQuery) -> dict:
    """``query.lastProgress`` as a dict ({} before the first batch), read as JSON in one
    Py4J call rather than field by field (see ``JsonProgressListener``)."""
    progress = query._jsq.lastProgress()
    return {} if progress is None else json.loads(progress.json())


def kafka_lag(progress: dict) -> int | None:
    """Records the Kafka source is behind the latest offsets (max over partitions)."""
    for source in progress.get("sources", []):
        value = (source.get("metrics") or {}).get("maxOffsetsBehindLatest")
        if value is not None:
            return int(float(value))
    return None


#: Spark 4.1.1's Kafka source fails the first batch after a restart from an uncommitted batch
#: with this NPE in ``KafkaMicroBatchStream.metrics`` (SPARK-55271); starting again works.
SPARK_55271 = 'because the return value of "scala.Option.get()" is null'


class FailureLogger(JsonProgressListener):
    """Logs every query that fails, with its first error line (the pipeline's query logs
    its own line per batch, ``pipelines.batch``). A ``JsonProgressListener``: the progress
    events it ignores still cross Py4J, once each."""

    def onQueryStarted(self, event) -> None:  # noqa: N802 (Spark's API)
        pass

    def onQueryProgress(self, event) -> None:  # noqa: N802
        pass

    def onQueryIdle(self, event) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event) -> None:  # noqa: N802
        if event.exception and SPARK_55271 in event.exception:  # its runner starts it again
            log.warning("query %s hit SPARK-55271 on its first batch", event.id)
        elif event.exception:
            log.error("query %s failed: %s", event.id, event.exception.splitlines()[0])


def status_line(queries: Sequence[StreamingQuery]) -> str:
    """``trades 120.0 rows/s batch 340 ms lag 0 e2e p50 ...`` from the latest progress."""
    parts = []
    for q in queries:
        p = last_progress(q)
        rate = p.get("processedRowsPerSecond") or 0.0
        batch_ms = (p.get("durationMs") or {}).get("triggerExecution", 0)
        text = f"{q.name} {rate:.1f} rows/s batch {batch_ms} ms"
        lag = kafka_lag(p)
        if lag is not None:
            text += f" lag {lag}"
        handler = getattr(q, "handler", None)
        if handler is not None:
            st = handler.stats
            p50 = "-" if st.latency_p50_ms is None else f"{st.latency_p50_ms:.0f} ms"
            text += f" e2e p50 {p50} rows {st.total_output} quarantined {st.total_quarantined}"
        if not q.isActive:
            text += " STOPPED"
        parts.append(text)
    return " | ".join(parts)


def stop_between_batches(queries: Sequence[StreamingQuery], timeout_s: float = 30.0) -> None:
    """Stop ``queries``, each at the end of the micro-batch it runs (at once when it runs
    none; interrupted after ``timeout_s``).

    ``StreamingQuery.stop`` interrupts a running batch; that is safe (the batch replays on
    the next start) but leaves its work half done until then. Waiting for the batch to end
    makes Ctrl-C leave every table as of a finished batch. It does not wait for a backlog:
    behind, a query starts its next batch at once, and the stop interrupts that one early
    (it replays on the next start), so a stop takes one batch, not the whole catch-up."""
    deadline = time.monotonic() + timeout_s
    pending = [q for q in queries if q.isActive]
    running = {q.id: _last_batch_id(q) for q in pending}
    while pending:
        for q in list(pending):
            if (
                not q.isActive
                or not q.status.get("isTriggerActive")
                or _last_batch_id(q) != running[q.id]  # the batch it ran has ended
                or time.monotonic() > deadline
            ):
                if q.isActive:
                    q.stop()
                pending.remove(q)
        if pending:
            time.sleep(0.05)


def _last_batch_id(query: StreamingQuery) -> int:
    """The id of the query's last finished batch (-1 before the first), in one Py4J call."""
    progress = query._jsq.lastProgress()
    return -1 if progress is None else int(progress.batchId())
