"""Fill trade-id gaps from REST on a worker thread; record what REST cannot serve.

Each gap is fetched with ``historicalTrades`` from its first id, the trades inside it are
published as trade frames with ``source=backfill``, and its outcome (filled / unfillable ids
and ranges) is written as one JSON record to the gaps topic, keyed by symbol.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field

from cryptoflow.core.config import Settings
from ingestion.frames import rest_trade_frame
from ingestion.gaps import Gap, GapTracker
from ingestion.producer import FrameProducer
from ingestion.rest import BinanceRest, RestError
from ingestion.status import IngestStats

log = logging.getLogger(__name__)

BACKFILL_HEADERS = [("source", b"backfill"), ("connection", b"rest")]


def gaps_topic(settings: Settings) -> str:
    return settings.gaps_topic or f"{settings.kafka_topic}.gaps"


@dataclass
class GapOutcome:
    """What became of one gap; the JSON value of its gaps-topic record."""

    symbol: str
    first_id: int
    last_id: int
    missing: int
    filled: int = 0
    unfillable: int = 0
    unfillable_ranges: list[list[int]] = field(default_factory=list)
    reason: str = ""
    detected_at_ms: int = 0
    finished_at_ms: int = 0

    def add_unfillable(self, first: int, last: int, reason: str) -> None:
        if last < first:
            return
        self.unfillable += last - first + 1
        self.unfillable_ranges.append([first, last])
        self.reason = self.reason or reason


def fill_gap(gap: Gap, rest: BinanceRest, publish, outcome: GapOutcome | None = None) -> GapOutcome:
    """Fetch ``gap`` page by page and ``publish(symbol, trade_id, frame_bytes)`` each trade."""
    out = outcome or GapOutcome(gap.symbol, gap.first, gap.last, gap.size)
    expected = gap.first
    while expected <= gap.last:
        try:
            page = rest.historical_trades(gap.symbol, expected, gap.last - expected + 1)
        except RestError as e:
            out.add_unfillable(expected, gap.last, f"REST failed: {e}")
            break
        inside = [t for t in page if expected <= int(t["id"]) <= gap.last]
        if not inside:
            out.add_unfillable(expected, gap.last, "not served by historicalTrades")
            break
        for trade in sorted(inside, key=lambda t: int(t["id"])):
            trade_id = int(trade["id"])
            if trade_id < expected:
                continue
            out.add_unfillable(expected, trade_id - 1, "not served by historicalTrades")
            publish(gap.symbol, trade_id, rest_trade_frame(gap.symbol, trade))
            out.filled += 1
            expected = trade_id + 1
    return out


class Backfiller:
    """A worker thread that fills gaps in the order they were found, and probes REST for
    trades newer than the last frame of a quiet symbol (a gap at the end of a feed, e.g.
    trades made while the connection was down, shows no later id on the stream)."""

    def __init__(
        self, settings: Settings, producer: FrameProducer, stats: IngestStats, tracker: GapTracker
    ) -> None:
        self.settings = settings
        self.tracker = tracker
        self.producer = producer
        self.stats = stats
        self.stop = threading.Event()
        self.rest = BinanceRest(settings, self.stop)
        self.topic = settings.kafka_topic
        self.gaps_topic = gaps_topic(settings)
        self._queue: queue.Queue[tuple[Gap | str, int] | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="backfill", daemon=True)
        self._thread.start()

    def submit(self, gap: Gap) -> None:
        """Queue a gap (called on the reader's thread; returns at once)."""
        self._count_gap(gap)
        log.info(
            "gap symbol=%s first=%d last=%d missing=%d", gap.symbol, gap.first, gap.last, gap.size
        )
        self._enqueue(gap)

    def probe(self, symbol: str) -> None:
        """Queue a REST look for trades of ``symbol`` newer than the last one seen."""
        self._enqueue(symbol)

    def _count_gap(self, gap: Gap) -> None:
        self.stats.add("gaps_found")
        self.stats.add("ids_missing", gap.size)
        self.stats.add("gaps_open")

    def _enqueue(self, item: Gap | str) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put((item, int(time.time() * 1000)))

    def wait_idle(self, timeout: float) -> bool:
        """Block until every submitted gap was handled; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Finish queued gaps (up to ``timeout``), then stop the worker."""
        self.wait_idle(timeout)
        self.stop.set()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _publish(self, symbol: str, trade_id: int, frame: bytes) -> None:
        self.producer.produce_blocking(
            self.topic,
            symbol.encode(),
            frame,
            int(time.time() * 1000),
            BACKFILL_HEADERS,
            serve_reports=False,
        )
        self.stats.add("ids_filled")

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            queued, detected_ms = item
            gap: Gap | None = None
            if isinstance(queued, str):  # a probe: it may turn into a gap
                try:
                    gap = self._probe(queued)
                finally:
                    if gap is None:  # found nothing (or failed): the probe is done
                        self._done()
                if gap is None:
                    continue
            else:
                gap = queued
            outcome = GapOutcome(
                gap.symbol, gap.first, gap.last, gap.size, detected_at_ms=detected_ms
            )
            try:
                if self.stop.is_set():
                    outcome.add_unfillable(gap.first, gap.last, "ingestion stopped first")
                else:
                    fill_gap(gap, self.rest, self._publish, outcome)
            except Exception as e:  # noqa: BLE001 - a bad page must not kill the worker
                log.exception("backfill of %s failed", gap)
                # pages are fetched in id order, so what is left is the tail of the gap
                left = outcome.missing - outcome.filled - outcome.unfillable
                outcome.add_unfillable(gap.last - left + 1, gap.last, f"error: {e}")
            finally:
                self._record(outcome)
                self.stats.add("gaps_open", -1)
                self._done()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _probe(self, symbol: str) -> Gap | None:
        last = self.tracker.last.get(symbol)
        if last is None or self.stop.is_set():
            return None
        try:
            page = self.rest.historical_trades(symbol, last + 1, 1000)
        except RestError as e:
            log.warning("probe symbol=%s failed: %s", symbol, e)
            return None
        newest = max((int(t["id"]) for t in page), default=None)
        gap = self.tracker.claim_after(symbol, newest) if newest is not None else None
        if gap is not None:
            self._count_gap(gap)
            log.info(
                "gap (probe) symbol=%s first=%d last=%d missing=%d",
                symbol,
                gap.first,
                gap.last,
                gap.size,
            )
        return gap

    def _record(self, out: GapOutcome) -> None:
        out.finished_at_ms = int(time.time() * 1000)
        self.stats.add("ids_unfillable", out.unfillable)
        log.info(
            "gap done symbol=%s first=%d last=%d filled=%d unfillable=%d%s",
            out.symbol,
            out.first_id,
            out.last_id,
            out.filled,
            out.unfillable,
            f" reason={out.reason!r}" if out.reason else "",
        )
        self.producer.produce_blocking(
            self.gaps_topic,
            out.symbol.encode(),
            json.dumps(asdict(out)).encode(),
            out.finished_at_ms,
            BACKFILL_HEADERS,
            serve_reports=False,
        )
