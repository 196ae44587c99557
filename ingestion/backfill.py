"""Fill id gaps from REST on a worker thread; record what REST cannot serve.

Each gap is fetched from the REST endpoint its stream kind names (``Continuity.backfill``:
``historicalTrades``, ``aggTrades``, ``klines``) from its first id, the records inside it are
published to the kind's topic as stream frames with ``source=backfill``, and its outcome
(filled / unfillable ids and ranges) is written as one JSON record to the gaps topic, keyed by
symbol. Gaps of a kind without an endpoint (book ticker update ids) are only counted: one
summary record per kind and symbol per status interval.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from cryptoflow.core.config import Settings
from cryptoflow.core.streams import DEFAULT_STREAMS, KINDS, MICROS_FROM
from ingestion.endpoints import PAGE, Endpoint
from ingestion.gaps import Gap, GapTracker
from ingestion.producer import FrameProducer
from ingestion.rest import BinanceRest, RestError
from ingestion.status import IngestStats

log = logging.getLogger(__name__)

BACKFILL_HEADERS = [("source", b"backfill"), ("connection", b"rest")]
#: ``publish(symbol, id, frame)``: hands one backfilled frame on.
Publish = Callable[[str, int, bytes], None]


def gaps_topic(settings: Settings) -> str:
    """Where gap outcomes go: ``CRYPTOFLOW_GAPS_TOPIC``, default ``<prefix>.gaps``."""
    return settings.gaps_topic or f"{settings.kafka_topic_prefix}.gaps"


def endpoint_of(rest: BinanceRest, kind: str) -> Endpoint | None:
    """The backfill endpoint of stream kind ``kind`` (None: its gaps are only counted)."""
    cont = KINDS[kind].continuity
    return rest.endpoints[cont.backfill] if cont is not None and cont.backfill else None


@dataclass
class GapOutcome:
    """What became of one gap; the JSON value of its gaps-topic record. Ids are in the kind's
    terms (``step`` apart: 60 000 for 1 m kline open times in ms)."""

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
    kind: str = DEFAULT_STREAMS[0]
    step: int = 1

    def add_unfillable(self, first: int, last: int, reason: str) -> None:
        if last < first:
            return
        self.unfillable += (last - first) // self.step + 1
        self.unfillable_ranges.append([first, last])
        self.reason = self.reason or reason


def outcome_of(gap: Gap, detected_ms: int = 0) -> GapOutcome:
    return GapOutcome(gap.symbol, gap.first, gap.last, gap.size, detected_at_ms=detected_ms,
                      kind=gap.kind, step=gap.step)  # fmt: skip


def fill_gap(
    gap: Gap, rest: BinanceRest, publish: Publish, outcome: GapOutcome | None = None
) -> GapOutcome:
    """Fetch ``gap`` page by page from its kind's endpoint and ``publish`` each record."""
    out = outcome or outcome_of(gap)
    endpoint = endpoint_of(rest, gap.kind)
    assert endpoint is not None, f"{gap.kind} has no backfill endpoint"
    missing = f"not served by {endpoint.name}"
    expected, step = gap.first, gap.step
    while expected <= gap.last:
        try:
            page = rest.rows(endpoint, gap.symbol, expected, gap.last, step)
        except RestError as e:
            out.add_unfillable(expected, gap.last, f"REST failed: {e}")
            break
        inside = sorted(
            ((rid, row) for row in page if expected <= (rid := endpoint.row_id(row)) <= gap.last),
            key=lambda pair: pair[0],
        )
        if not inside:
            out.add_unfillable(expected, gap.last, missing)
            break
        for rid, row in inside:
            if rid < expected or (rid - expected) % step:
                continue  # a repeat, or off the step's grid
            out.add_unfillable(expected, rid - step, missing)
            publish(gap.symbol, rid, endpoint.frame(gap.symbol, row, rid, step))
            out.filled += 1
            expected = rid + step
    return out


@dataclass
class Counted:
    """Gaps of one kind and symbol that are only counted, since the last summary record."""

    gaps: int = 0
    missing: int = 0
    first_id: int | None = None
    last_id: int = 0
    since_ms: int = field(default_factory=lambda: int(time.time() * 1000))


class Backfiller:
    """A worker thread that fills gaps in the order they were found, and probes REST for
    records newer than the last frame of a quiet symbol (a gap at the end of a feed, e.g.
    trades made while the connection was down, shows no later id on the stream). One REST
    client, so one request-weight budget, serves every kind."""

    def __init__(
        self,
        settings: Settings,
        producer: FrameProducer,
        stats: IngestStats,
        trackers: dict[str, GapTracker],
    ) -> None:
        self.settings = settings
        self.trackers = trackers
        self.producer = producer
        self.stats = stats
        self.stop = threading.Event()
        self.rest = BinanceRest(settings, self.stop)
        self.topics = {name: settings.topic(KINDS[name]) for name in trackers}
        self.gaps_topic = gaps_topic(settings)
        self._queue: queue.Queue[tuple[Gap | tuple[str, str] | None, int] | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._counted: dict[tuple[str, str], Counted] = {}
        self._counted_lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="backfill", daemon=True)
        self._thread.start()

    def submit(self, gap: Gap) -> None:
        """Queue a gap, or count it when its kind has no backfill endpoint (called on the
        reader's thread; returns at once)."""
        if endpoint_of(self.rest, gap.kind) is None:
            self._count_only(gap)
            return
        self._count_gap(gap)
        log.info("gap kind=%s symbol=%s first=%d last=%d missing=%d",
                 gap.kind, gap.symbol, gap.first, gap.last, gap.size)  # fmt: skip
        self._enqueue(gap)

    def probe(self, kind: str, symbol: str) -> None:
        """Queue a REST look for records of ``symbol`` newer than the last one seen."""
        self._enqueue((kind, symbol))

    def _count_only(self, gap: Gap) -> None:
        self.stats.add("gaps_counted", kind=gap.kind)
        with self._counted_lock:
            c = self._counted.setdefault((gap.kind, gap.symbol), Counted())
            c.gaps += 1
            c.missing += gap.size
            c.first_id = gap.first if c.first_id is None else c.first_id
            c.last_id = gap.last
        with self.stats.lock:
            self.stats.kind(gap.kind).ids_skipped += gap.size

    def _count_gap(self, gap: Gap) -> None:
        self.stats.add("gaps_found", kind=gap.kind)
        self.stats.add("ids_missing", gap.size, kind=gap.kind)
        self.stats.add("gaps_open")

    def _enqueue(self, item: Gap | tuple[str, str]) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put((item, int(time.time() * 1000)))

    def wait_idle(self, timeout: float) -> bool:
        """Block until every submitted gap was handled; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Finish queued gaps (up to ``timeout``), record the counted ones, stop the worker."""
        self.wait_idle(timeout)
        self.stop.set()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _publish(self, gap: Gap) -> Publish:
        topic = self.topics[gap.kind]

        def publish(symbol: str, ident: int, frame: bytes) -> None:
            self.producer.produce_blocking(
                topic, symbol.encode(), frame, int(time.time() * 1000), BACKFILL_HEADERS,
                serve_reports=False,
            )  # fmt: skip
            self.stats.add("ids_filled", kind=gap.kind)

        return publish

    def _work(self) -> None:
        interval = max(1, self.settings.status_interval_s)
        next_summary = time.monotonic() + interval
        while True:
            try:
                item = self._queue.get(timeout=max(0.05, next_summary - time.monotonic()))
            except queue.Empty:
                item = None if self.stop.is_set() else (None, 0)  # nothing queued meanwhile
            if item is None or time.monotonic() >= next_summary:
                self._record_counted()
                next_summary = time.monotonic() + interval
            if item is None:
                return
            queued, detected_ms = item
            if queued is not None:
                self._handle(queued, detected_ms)

    def _handle(self, queued: Gap | tuple[str, str], detected_ms: int) -> None:
        gap: Gap | None = None
        if isinstance(queued, tuple):  # a probe: it may turn into a gap
            try:
                gap = self._probe(*queued)
            finally:
                if gap is None:  # found nothing (or failed): the probe is done
                    self._done()
            if gap is None:
                return
        else:
            gap = queued
        outcome = outcome_of(gap, detected_ms)
        try:
            if self.stop.is_set():
                outcome.add_unfillable(gap.first, gap.last, "ingestion stopped first")
            else:
                fill_gap(gap, self.rest, self._publish(gap), outcome)
        except Exception as e:  # noqa: BLE001 - a bad page must not kill the worker
            log.exception("backfill of %s failed", gap)
            # pages are fetched in id order, so what is left is the tail of the gap
            left = outcome.missing - outcome.filled - outcome.unfillable
            outcome.add_unfillable(gap.last - (left - 1) * gap.step, gap.last, f"error: {e}")
        finally:
            self._record(outcome)
            self.stats.add("gaps_open", -1)
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _probe(self, kind: str, symbol: str) -> Gap | None:
        tracker = self.trackers[kind]
        last = tracker.last.get(symbol)
        endpoint = endpoint_of(self.rest, kind)
        if last is None or endpoint is None or self.stop.is_set():
            return None
        step = tracker.step(last)
        try:
            page = self.rest.rows(endpoint, symbol, last + step, last + step * PAGE, step)
        except RestError as e:
            log.warning("probe kind=%s symbol=%s failed: %s", kind, symbol, e)
            return None
        now = time.time() * (1_000_000 if last >= MICROS_FROM else 1000)
        final = [endpoint.row_id(row) for row in page if endpoint.final(row, int(now))]
        gap = tracker.claim_after(symbol, max(final)) if final else None
        if gap is not None:
            self._count_gap(gap)
            log.info("gap (probe) kind=%s symbol=%s first=%d last=%d missing=%d",
                     kind, symbol, gap.first, gap.last, gap.size)  # fmt: skip
        return gap

    def _record(self, out: GapOutcome) -> None:
        out.finished_at_ms = int(time.time() * 1000)
        self.stats.add("ids_unfillable", out.unfillable, kind=out.kind)
        log.info(
            "gap done kind=%s symbol=%s first=%d last=%d filled=%d unfillable=%d%s",
            out.kind, out.symbol, out.first_id, out.last_id, out.filled, out.unfillable,
            f" reason={out.reason!r}" if out.reason else "",
        )  # fmt: skip
        self._produce(out.symbol, asdict(out), out.finished_at_ms)

    def _record_counted(self) -> None:
        """One record per kind and symbol whose gaps were counted since the last one."""
        with self._counted_lock:
            counted, self._counted = self._counted, {}
        now = int(time.time() * 1000)
        for (kind, symbol), c in counted.items():
            log.info("gaps counted kind=%s symbol=%s gaps=%d missing=%d",
                     kind, symbol, c.gaps, c.missing)  # fmt: skip
            record = {"symbol": symbol, "kind": kind, "counted_only": True, "gaps": c.gaps,
                      "missing": c.missing, "first_id": c.first_id, "last_id": c.last_id,
                      "since_ms": c.since_ms, "until_ms": now}  # fmt: skip
            self._produce(symbol, record, now)

    def _produce(self, symbol: str, record: dict, timestamp_ms: int) -> None:
        self.producer.produce_blocking(
            self.gaps_topic, symbol.encode(), json.dumps(record).encode(), timestamp_ms,
            BACKFILL_HEADERS, serve_reports=False,
        )  # fmt: skip
