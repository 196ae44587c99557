"""``run_ingestion``: the Python API behind ``cryptoflow ingest`` (live, simulator or CSV)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from cryptoflow.core.config import Settings
from cryptoflow.core.services import kafka
from ingestion import csv_replay
from ingestion.backfill import Backfiller, gaps_topic
from ingestion.connection import Supervisor
from ingestion.frames import INVALID_HEADER, Frame, classify
from ingestion.gaps import GapTracker
from ingestion.producer import FrameProducer
from ingestion.resume import last_trade_ids
from ingestion.status import REPLAYING, IngestStats, StatusFile, StatusLine, ingest_status_path

log = logging.getLogger("ingestion")

#: ``source`` header value per ``--source``.
SOURCE_HEADER = {"binance": "live", "sim": "simulator", "csv": "csv"}
FLUSH_TIMEOUT_S = 30.0
POLL_EVERY = 512  # frames between producer polls / loop yields on the hot path


class StreamIngestor:
    """Turns each received frame into one Kafka record and watches trade-id continuity."""

    def __init__(
        self,
        settings: Settings,
        producer: FrameProducer,
        stats: IngestStats,
        tracker: GapTracker,
        backfiller: Backfiller,
    ) -> None:
        self.topic = settings.kafka_topic
        self.source = SOURCE_HEADER[settings.source].encode()
        self.producer = producer
        self.stats = stats
        self.tracker = tracker
        self.backfiller = backfiller
        self._headers: dict[str, list[tuple[str, bytes]]] = {}

    async def handle(self, raw: bytes, received_ms: int, conn_id: str) -> Frame:
        stats = self.stats
        stats.frames += 1
        frame = classify(raw)
        headers = self._headers.get(conn_id)
        if headers is None:
            headers = self._headers[conn_id] = [
                ("source", self.source),
                ("connection", conn_id.encode()),
            ]
        if frame.invalid is not None:
            stats.invalid += 1
            headers = [*headers, (INVALID_HEADER, frame.invalid.encode())]
            if stats.invalid <= 10 or stats.invalid % 1000 == 0:  # a sample, never a flood
                log.warning(
                    "invalid frame connection=%s reason=%r invalid_total=%d",
                    conn_id,
                    frame.invalid,
                    stats.invalid,
                )
        elif frame.symbol is not None and frame.trade_id is not None:  # a trade: it has both
            gap, duplicate = self.tracker.observe(frame.symbol, frame.trade_id)
            if duplicate:
                stats.duplicates += 1
            elif gap is not None:
                self.backfiller.submit(gap)
        producer = self.producer
        if not producer.try_produce(self.topic, frame.key, raw, received_ms, headers):
            await producer.produce(self.topic, frame.key, raw, received_ms, headers)  # waits
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
    """Ingest from ``settings.source`` into ``settings.kafka_topic`` until ``stop_event`` is
    set (or, for CSV, the files are replayed). Flushes the producer before returning.

    Pass ``stats`` to watch the counters while it runs (e.g. from another thread). The
    state and counters are also written every second to ``ingest_status_path(settings)``
    (what ``cryptoflow up`` shows of its ingestion child)."""
    stop_event = stop_event or threading.Event()
    stats = stats if stats is not None else IngestStats()
    status = StatusFile(ingest_status_path(settings), stats, lambda: 0).start()
    try:
        kafka.ensure_topic(settings)
        producer = FrameProducer(settings, stats)
        status.buffered = lambda: producer.buffered
        try:
            if settings.source == "csv":
                stats.connection = REPLAYING
                csv_replay.replay(settings, producer, stats, csv_paths, speed, stop_event)
            else:
                kafka.ensure_topic(settings, gaps_topic(settings), partitions=1)
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
    source = SOURCE_HEADER[settings.source]
    tracker = GapTracker(last_trade_ids(settings, (source, "backfill")))
    stats.last_trade_id.update(tracker.last)
    tracker.last = stats.last_trade_id  # one live dict: the status line shows the tracker's
    backfiller = Backfiller(settings, producer, stats, tracker)
    ingestor = StreamIngestor(settings, producer, stats, tracker, backfiller)
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
    supervisor = Supervisor(settings, ingestor.handle, stats, stop)
    log.info(
        "ingesting source=%s from %s into %s", settings.source, supervisor.url, settings.kafka_topic
    )
    housekeeping = asyncio.create_task(_housekeeping(settings, ingestor, stats, stop_event, stop))
    try:
        await supervisor.run()
    finally:
        stop.set()
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
    producer, tracker = ingestor.producer, ingestor.tracker
    status = StatusLine(stats)
    started = time.monotonic()
    next_status = started + settings.status_interval_s
    idle = settings.gap_probe_idle_s
    # per symbol: (last id, when it last changed, when last probed) - quiet = id unchanged
    quiet: dict[str, tuple[int | None, float, float]] = {}
    while not stop.is_set():
        if stop_event.is_set():
            stop.set()
            break
        producer.poll(0)
        now = time.monotonic()
        for symbol in settings.symbols:
            last = tracker.last.get(symbol)
            seen, changed, probed = quiet.get(symbol, (last, started, started))
            if last != seen:
                changed = now
            if now - changed >= idle and now - probed >= idle:
                probed = now
                ingestor.backfiller.probe(symbol)
            quiet[symbol] = (last, changed, probed)
        if time.monotonic() >= next_status:
            log.info("status %s", status.line(producer.buffered))
            next_status += settings.status_interval_s
        await asyncio.sleep(0.05)
