"""Helpers for ingestion tests: read a topic back with confluent-kafka, make trade files."""

from __future__ import annotations

import json
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from cryptoflow.config import Settings
from ingestion.frames import INVALID_HEADER


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
