"""Progress of running queries: one log line per micro-batch and a periodic status line."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

log = logging.getLogger("pipelines.progress")


def kafka_lag(progress: dict) -> int | None:
    """Records the Kafka source is behind the latest offsets (max over partitions)."""
    for source in progress.get("sources", []):
        value = (source.get("metrics") or {}).get("maxOffsetsBehindLatest")
        if value is not None:
            return int(float(value))
    return None


class BatchLogger(StreamingQueryListener):
    """Logs each finished batch of the queries it is told about (silver logs its own)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)

    def onQueryStarted(self, event) -> None:  # noqa: N802 (Spark's API)
        pass

    def onQueryProgress(self, event) -> None:  # noqa: N802
        p = event.progress
        if p.name not in self.names or p.numInputRows == 0:
            return
        sink = p.sink.numOutputRows if p.sink is not None else -1
        lag = kafka_lag(json.loads(p.json))
        log.info(
            "%s batch=%d input=%d output=%d quarantined=0 duration_ms=%d lag=%s",
            p.name,
            p.batchId,
            p.numInputRows,
            sink,
            (p.durationMs or {}).get("triggerExecution", 0),
            "-" if lag is None else lag,
        )

    def onQueryIdle(self, event) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event) -> None:  # noqa: N802
        if event.exception:
            log.error("query %s failed: %s", event.id, event.exception.splitlines()[0])


def status_line(queries: Sequence[StreamingQuery]) -> str:
    """``bronze 120.0 rows/s batch 340 ms lag 0 | silver ...`` from the latest progress."""
    parts = []
    for q in queries:
        p = q.lastProgress or {}
        rate = p.get("processedRowsPerSecond") or 0.0
        batch_ms = (p.get("durationMs") or {}).get("triggerExecution", 0)
        text = f"{q.name} {rate:.1f} rows/s batch {batch_ms} ms"
        lag = kafka_lag(p)
        if lag is not None:
            text += f" lag {lag}"
        stats = getattr(q, "silver", None)
        if stats is not None:
            st = stats.stats
            p50 = "-" if st.latency_p50_ms is None else f"{st.latency_p50_ms:.0f} ms"
            text += f" e2e p50 {p50} rows {st.total_output} quarantined {st.total_quarantined}"
        if not q.isActive:
            text += " STOPPED"
        parts.append(text)
    return " | ".join(parts)


def stop_between_batches(queries: Sequence[StreamingQuery], timeout_s: float = 30.0) -> None:
    """Stop ``queries``, each once it is between micro-batches (or after ``timeout_s``).

    ``StreamingQuery.stop`` interrupts a running batch; that is safe (the batch replays on
    the next start) but leaves its work half done until then. Waiting for the batch to end
    makes Ctrl-C leave every table as of a finished batch."""
    deadline = time.monotonic() + timeout_s
    pending = [q for q in queries if q.isActive]
    while pending:
        for q in list(pending):
            if not q.isActive or not q.status.get("isTriggerActive") or time.monotonic() > deadline:
                if q.isActive:
                    q.stop()
                pending.remove(q)
        if pending:
            time.sleep(0.05)
