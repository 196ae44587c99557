"""Helpers for ingestion tests: read a topic back with confluent-kafka, make trade files."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from cryptoflow.core.config import Settings
from cryptoflow.core.services import kafka
from cryptoflow.core.streams import StreamKind
from ingestion.frames import INVALID_HEADER, classify, rest_trade_frame
from ingestion.producer import FrameProducer
from ingestion.runner import run_ingestion
from ingestion.simulator.record import read_record
from ingestion.status import IngestStats
from tests.conftest import wait_until


@dataclass(frozen=True)
class Record:
    key: bytes
    value: bytes
    headers: dict[str, bytes]
    timestamp_ms: int
    partition: int
    offset: int

    @property
    def invalid(self) -> str | None:
        v = self.headers.get(INVALID_HEADER)
        return v.decode() if v is not None else None

    def trade(self) -> dict | None:
        """The trade payload of a valid frame, else None."""
        if self.invalid is not None:
            return None
        return json.loads(self.value)["data"]


def read_topic(settings: Settings, topic: str, timeout: float = 60) -> list[Record]:
    """Every record of ``topic`` from the beginning to the current end of each partition."""
    c = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 3,
        }
    )
    try:
        md = c.list_topics(topic, timeout=30).topics[topic]
        ends = {}
        for p in md.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Record] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in c.consume(1000, timeout=1):
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(msg.error())
                    if (
                        c.position([TopicPartition(topic, msg.partition())])[0].offset
                        >= ends[msg.partition()]
                    ):
                        done.add(msg.partition())
                    continue
                if msg.offset() >= ends[msg.partition()]:
                    continue
                out.append(
                    Record(
                        msg.key(),
                        msg.value(),
                        dict(msg.headers() or []),
                        msg.timestamp()[1],
                        msg.partition(),
                        msg.offset(),
                    )
                )
                if msg.offset() == ends[msg.partition()] - 1:
                    done.add(msg.partition())
        if len(done) < len(ends):
            raise TimeoutError(f"read {len(out)} records of {topic}, partitions {done}/{ends}")
        return out
    finally:
        c.close()


def trade_ids(records: list[Record]) -> list[tuple[str, int]]:
    """(symbol, trade id) of every valid trade frame, in read order (duplicates kept)."""
    out = []
    for r in records:
        t = r.trade()
        if t is not None:
            out.append((t["s"], t["t"]))
    return out


def kind_ids(records: list[Record], kind: StreamKind) -> list[tuple[str, int]]:
    """(symbol, continuity id) of every valid frame of ``kind`` that counts (closed klines),
    in read order (duplicates kept)."""
    out = []
    for r in records:
        f = classify(r.value)
        if r.invalid is None and f.kind is kind and f.symbol and f.record_id is not None:
            out.append((f.symbol, f.record_id))
    return out


def read_topics(settings: Settings) -> dict[str, list[Record]]:
    """Every record of every chosen kind's topic, by topic."""
    return {topic: read_topic(settings, topic) for topic in settings.topics}


def write_trade_file(
    path: Path, rows: list[tuple], header: bool = False, extra_lines: list[str] = ()
) -> Path:
    """A public-data trade file (``.csv``, or ``.zip`` holding one csv) of ``rows``."""
    lines = ["id,price,qty,quote_qty,time,is_buyer_maker,is_best_match"] if header else []
    lines += [",".join(str(c) for c in row) for row in rows]
    lines += list(extra_lines)
    text = "\n".join(lines) + "\n"
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(path.with_suffix(".csv").name, text)
    else:
        path.write_text(text)
    return path


class IngestThread:
    """``run_ingestion`` in a background thread, like ``cryptoflow up`` runs it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.stats = IngestStats()  # live counters
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def _run(self) -> None:
        try:
            run_ingestion(self.settings, stop_event=self.stop, stats=self.stats)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def finish(self, timeout: float = 90) -> IngestStats:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "ingestion did not stop"
        if self.error:
            raise self.error
        return self.stats

    def caught_up(self, want: set[tuple[str, int]]) -> bool:
        """The last recorded id of every symbol was seen and no gap is being filled."""
        last: dict[str, int] = {}
        for sym, tid in want:
            last[sym] = max(tid, last.get(sym, tid))
        st = self.stats
        if self.error:
            raise self.error
        return st.gaps_open == 0 and all(st.last_trade_id.get(k) == v for k, v in last.items())

    def counts(self, kind: str):
        """The counters of stream kind ``kind`` (``IngestStats.kinds``)."""
        return self.stats.kind(kind)


@contextlib.contextmanager
def ingesting(settings: Settings) -> Iterator[IngestThread]:
    t = IngestThread(settings)
    t.thread.start()
    try:
        yield t
    finally:
        if t.thread.is_alive():
            t.stop.set()
            t.thread.join(90)


def recorded_ids(path: Path) -> set[tuple[str, int]]:
    return {(r["s"], r["t"]) for r in read_record(path)}


def rest_agg_ids(handle, symbol: str, first: int, last: int = 2**63 - 1) -> set[int]:
    """The simulator's aggregate ids of ``symbol`` in ``first..last``, from its REST."""
    ids: set[int] = set()
    start = first
    while start <= last:
        url = f"{handle.rest_url}/api/v3/aggTrades?symbol={symbol}&fromId={start}&limit=1000"
        with urllib.request.urlopen(url, timeout=10) as r:
            page = [a["a"] for a in json.loads(r.read()) if a["a"] <= last]
        if not page:
            break
        ids.update(page)
        start = max(page) + 1
    return ids


def _first_trade(url: str) -> dict | None:
    with urllib.request.urlopen(url, timeout=10) as r:
        page = json.loads(r.read())
    return page[0] if page else None


def seed_resume_point(handle, s: Settings) -> set[tuple[str, int]]:
    """Produce, per symbol, a frame with the id just before the simulator's first trade, as if
    an earlier ingestion run had stopped there: the run under test must then resume and
    backfill every trade the simulator made, including those before it connected."""
    seeded = set()
    stats = IngestStats()
    producer = FrameProducer(s, stats)
    kafka.ensure_topic(s)
    for symbol in s.symbols:
        url = f"{handle.rest_url}/api/v3/historicalTrades?symbol={symbol}&fromId=0&limit=1"
        first = wait_until(lambda u=url: _first_trade(u), 30, what=f"a {symbol} trade")
        frame = rest_trade_frame(symbol, {**first, "id": first["id"] - 1})
        producer.produce_blocking(
            s.kafka_topic,
            symbol.encode(),
            frame,
            int(time.time() * 1000),
            [("source", b"simulator"), ("connection", b"seed")],
        )
        seeded.add((symbol, first["id"] - 1))
    assert producer.flush(30) == 0
    return seeded


def client(handle, settings: Settings, unique: str, **overrides) -> Settings:
    values = dict(
        kafka_topic_prefix=f"ingest-{unique}",
        ws_backoff_initial_ms=100,
        ws_backoff_max_ms=1000,
        status_interval_s=1,
    )
    values.update(overrides)
    return handle.client_settings(settings).replace(**values)
