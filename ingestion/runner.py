"""``run_ingestion``: the Python API behind ``cryptoflow ingest`` (live, simulator or CSV).

Every frame goes, unchanged, to the topic of its stream kind (``settings.topic(kind)``), told
by its combined stream name; a frame whose kind cannot be told goes to the trade topic
(``settings.kafka_topic``) flagged invalid, so the pipeline quarantines it. Each kind's ids are
watched for gaps (``ingestion.gaps``), filled from REST or counted (``ingestion.backfill``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from cryptoflow.core.config import Settings
from cryptoflow.core.services import kafka
from ingestion import csv_replay
from ingestion.backfill import Backfiller, endpoint_of, gaps_topic
from ingestion.connection import Supervisor, stream_urls
from ingestion.frames import INVALID_HEADER, Classifier, Frame
from ingestion.gaps import GapTracker, now_in_unit
from ingestion.producer import FrameProducer
from ingestion.resume import last_ids
from ingestion.status import (
    REPLAYING,
    IngestStats,
    KindStats,
    StatusFile,
    StatusLine,
    ingest_status_path,
)

log = logging.getLogger("ingestion")

#: ``source`` header value per ``--source``.
SOURCE_HEADER = {"binance": "live", "sim": "simulator", "csv": "csv"}
FLUSH_TIMEOUT_S = 30.0
POLL_EVERY = 512  # frames between producer polls / loop yields on the hot path


class StreamIngestor:
    """Turns each received frame into one Kafka record on its kind's topic and watches each
    kind's id continuity."""

    def __init__(
        self,
        settings: Settings,
        producer: FrameProducer,
        stats: IngestStats,
        trackers: dict[str, GapTracker],
        backfiller: Backfiller,
    ) -> None:
        kinds = settings.stream_kinds
        self.classify = Classifier(kinds)
        self.fallback = settings.kafka_topic  # frames of no kind: the trade topic, as always
        self.routes: dict[str, tuple[str, KindStats, GapTracker | None]] = {
            k.name: (settings.topic(k), stats.kind(k.name), trackers.get(k.name)) for k in kinds
        }
        self.source = SOURCE_HEADER[settings.source].encode()
        self.producer = producer
        self.stats = stats
        self.trackers = trackers
        self.backfiller = backfiller
        self._headers: dict[str, list[tuple[str, bytes]]] = {}

    async def handle(self, raw: bytes, received_ms: int, conn_id: str) -> Frame:
        stats = self.stats
        stats.frames += 1
        frame = self.classify(raw)
        kind = frame.kind
        tracker = None
        if kind is None:
            topic = self.fallback
        else:
            topic, counts, tracker = self.routes[kind.name]
            counts.frames += 1
        headers = self._headers.get(conn_id)
        if headers is None:
            headers = self._headers[conn_id] = [
                ("source", self.source),
                ("connection", conn_id.encode()),
            ]
        if frame.invalid is not None:
            stats.invalid += 1
            if kind is not None:
                counts.invalid += 1
            headers = [*headers, (INVALID_HEADER, frame.invalid.encode())]
            if stats.invalid <= 10 or stats.invalid % 1000 == 0:  # a sample, never a flood
                log.warning(
                    "invalid frame connection=%s kind=%s reason=%r invalid_total=%d",
                    conn_id,
                    kind.name if kind is not None else "-",
                    frame.invalid,
                    stats.invalid,
                )
        elif tracker is not None and frame.record_id is not None:  # a valid frame that counts
            gap, duplicate = tracker.observe(frame.symbol, frame.record_id)  # type: ignore[arg-type]
            if duplicate:
                stats.duplicates += 1
                counts.duplicates += 1
            elif gap is not None:
                self.backfiller.submit(gap)
        producer = self.producer
        if not producer.try_produce(topic, frame.key, raw, received_ms, headers):
            await producer.produce(topic, frame.key, raw, received_ms, headers)  # waits
        if stats.frames % POLL_EVERY == 0:
            self.producer.poll(0)
            await asyncio.sleep(0)  # let the status / stop tasks run under full load
        return frame


def run_ingestion(
    settings: Settings,
    stop_event: threading.Event | None = None,
    csv_paths: Sequence[Path] = (),
    speed: float | None = None,
    stats: IngestStats | None = None,
) -> IngestStats:
    """Ingest from ``settings.source`` into the topics of ``settings.stream_kinds`` until
    ``stop_event`` is set (or, for CSV, the files are replayed). Flushes the producer before
    returning.

    Pass ``stats`` to watch the counters while it runs (e.g. from another thread). The
    state and counters are also written every second to ``ingest_status_path(settings)``
    (what ``cryptoflow up`` shows of its ingestion child)."""
    stop_event = stop_event or threading.Event()
    stats = stats if stats is not None else IngestStats()
    status = StatusFile(ingest_status_path(settings), stats, lambda: 0).start()
    try:
        kafka.ensure_topics(settings, {gaps_topic(settings): 1})
        producer = FrameProducer(settings, stats)
        status.buffered = lambda: producer.buffered
        try:
            if settings.source == "csv":
                stats.connection = REPLAYING
                csv_replay.replay(settings, producer, stats, csv_paths, speed, stop_event)
            else:
                _run_stream(settings, producer, stats, stop_event)
        finally:
            left = stats.undelivered = producer.flush(FLUSH_TIMEOUT_S)
            line = StatusLine(stats).line(left, whole_run=True)
            log.info("stopped %s undelivered=%d", line, left)
    finally:
        status.stop()
    return stats


def _run_stream(
    settings: Settings, producer: FrameProducer, stats: IngestStats, stop_event: threading.Event
) -> None:
    sources = (SOURCE_HEADER[settings.source], "backfill")
    trackers: dict[str, GapTracker] = {}
    for kind in settings.stream_kinds:
        if kind.continuity is None:
            continue
        tracker = GapTracker.for_kind(kind, last_ids(settings, kind, sources))
        if not trackers:  # the first kind (trades): the status line shows its ids, as always
            stats.last_trade_id.update(tracker.last)
            tracker.last = stats.last_trade_id
        stats.last_ids[kind.name] = tracker.last  # one live dict per kind
        trackers[kind.name] = tracker
    backfiller = Backfiller(settings, producer, stats, trackers)
    ingestor = StreamIngestor(settings, producer, stats, trackers, backfiller)
    try:
        asyncio.run(_stream(settings, ingestor, producer, stats, stop_event))
    finally:
        # gaps found so far still get filled (bounded), then their frames are flushed
        backfiller.close(timeout=FLUSH_TIMEOUT_S)


async def _stream(
    settings: Settings,
    ingestor: StreamIngestor,
    producer: FrameProducer,
    stats: IngestStats,
    stop_event: threading.Event,
) -> None:
    stop = asyncio.Event()
    ids = itertools.count(1)  # connection ids c1, c2... across the supervisors
    supervisors = [
        Supervisor(settings, ingestor.handle, stats, stop, url=url, ids=ids)
        for url in stream_urls(settings)
    ]
    for sup in supervisors:
        log.info("ingesting source=%s from %s", settings.source, sup.url)
    log.info("into topics=%s (kinds %s)", ",".join(settings.topics),
             ",".join(k.name for k in settings.stream_kinds))  # fmt: skip
    housekeeping = asyncio.create_task(_housekeeping(settings, ingestor, stats, stop_event, stop))
    tasks = [asyncio.create_task(sup.run()) for sup in supervisors]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # a supervisor that failed for good (e.g. the producer) raises here
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await housekeeping


async def _housekeeping(
    settings: Settings,
    ingestor: StreamIngestor,
    stats: IngestStats,
    stop_event: threading.Event,
    stop: asyncio.Event,
) -> None:
    """Serve delivery reports, print the status line, probe quiet symbols, and turn
    ``stop_event`` into ``stop``."""
    producer = ingestor.producer
    status = StatusLine(stats)
    started = time.monotonic()
    next_status = started + settings.status_interval_s
    idle = settings.gap_probe_idle_s
    probed_kinds = {
        name: tracker
        for name, tracker in ingestor.trackers.items()
        if endpoint_of(ingestor.backfiller.rest, name) is not None
    }
    # per (kind, symbol): (last id, when it last changed, when last probed) - quiet = unchanged
    quiet: dict[tuple[str, str], tuple[int | None, float, float]] = {}
    while not stop.is_set():
        if stop_event.is_set():
            stop.set()
            break
        producer.poll(0)
        now = time.monotonic()
        for name, tracker in probed_kinds.items():
            for symbol in settings.symbols:
                last = tracker.last.get(symbol)
                seen, changed, probed = quiet.get((name, symbol), (last, started, started))
                if last != seen:
                    changed = now
                if now - changed >= idle and now - probed >= idle and _due(tracker, last, idle):
                    probed = now
                    ingestor.backfiller.probe(name, symbol)
                quiet[(name, symbol)] = (last, changed, probed)
        if time.monotonic() >= next_status:
            log.info("status %s", status.line(producer.buffered))
            next_status += settings.status_interval_s
        await asyncio.sleep(0.05)


def _due(tracker: GapTracker, last: int | None, idle_s: int) -> bool:
    """Whether a record after ``last`` should exist by now: always for ids; for time ids (a
    closed kline's open time) once the next one has closed, plus the idle time."""
    if not tracker.timed or last is None:
        return True
    step = tracker.step(last)
    return now_in_unit(last) >= last + 2 * step + idle_s * (step // tracker.base_step) * 1000
