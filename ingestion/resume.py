"""Where to resume: per stream kind, the highest continuity id per symbol that already reached
the kind's raw topic (trade ids, aggregate ids, closed klines' open times, update ids)."""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ServiceError
from cryptoflow.core.streams import StreamKind
from ingestion.frames import INVALID_HEADER, classify

log = logging.getLogger(__name__)

WINDOW = 5_000  # messages read per step back from a partition's end
SCAN_TIMEOUT_S = 5.0  # a scan that receives nothing for this long fails


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for ``key``."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(key)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= key[base + 2] << 16
    if tail >= 2:
        h ^= key[base + 1] << 8
    if tail >= 1:
        h ^= key[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def last_ids(
    settings: Settings,
    kind: StreamKind,
    sources: tuple[str, ...],
    symbols: list[str] | None = None,
) -> dict[str, int]:
    """Scan each symbol's partition of ``kind``'s topic backwards from its end until the
    symbol was seen (or ``resume_scan_messages`` were read) and return the highest id per
    symbol among valid frames of ``kind`` whose ``source`` header is in ``sources``."""
    wanted = set(symbols or settings.symbols)
    topic = settings.topic(kind)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"cryptoflow-resume-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 3,
        }
    )
    found: dict[str, int] = {}
    try:
        meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
        if meta is None or meta.error is not None:
            return found
        by_partition: dict[int, set[str]] = {}
        for sym in wanted:
            part = murmur2_partition(sym.encode(), len(meta.partitions))
            by_partition.setdefault(part, set()).add(sym)
        for partition, syms in sorted(by_partition.items()):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 15)
            end, scanned = high, 0
            while end > low and scanned < settings.resume_scan_messages:
                start = max(low, end - WINDOW)
                seen = _scan(consumer, kind, topic, partition, start, end, sources)
                for sym, tid in seen.items():
                    found[sym] = max(found.get(sym, tid), tid)
                scanned += end - start
                end = start
                if syms <= set(found):
                    break  # this partition's symbols all seen at their newest frames
    except KafkaException as e:
        raise ServiceError(f"cannot read {topic} to resume: {e}") from e
    finally:
        consumer.close()
    log.info("resume from topic=%s kind=%s last_ids=%s", topic, kind.name, found or "{} (empty)")
    return found


def _scan(
    consumer: Consumer,
    kind: StreamKind,
    topic: str,
    partition: int,
    start: int,
    end: int,
    sources: tuple,
) -> dict[str, int]:
    """Highest id of ``kind`` per symbol in offsets [start, end) of one partition."""
    consumer.assign([TopicPartition(topic, partition, start)])
    best: dict[str, int] = {}
    wanted_sources = {s.encode() for s in sources}
    done = False
    deadline = time.monotonic() + SCAN_TIMEOUT_S
    while not done:
        # Short polls: librdkafka returns a batch at 1,000 messages or at the timeout, so a
        # partition with fewer records left than that cost the whole timeout (5 s, twice
        # for two partitions: ingestion came up 10 s late after any restart with data).
        msgs = consumer.consume(1000, timeout=0.1)
        if not msgs:
            if time.monotonic() < deadline:
                continue
            raise ServiceError(f"timed out reading {topic}[{partition}] at offset {start}")
        deadline = time.monotonic() + SCAN_TIMEOUT_S
        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.code() == -191:  # _PARTITION_EOF
                    done = True
                    break
                raise ServiceError(f"reading {topic}[{partition}]: {error}")
            offset = msg.offset()
            if offset is None or offset == OFFSET_INVALID:
                break
            if offset >= end - 1:
                done = True
            if offset >= end:
                break
            headers = dict(msg.headers() or [])
            if INVALID_HEADER in headers or headers.get("source") not in wanted_sources:
                continue
            frame = classify(msg.value() or b"")  # no value (a tombstone): no frame
            if frame.kind is not kind or frame.symbol is None or frame.record_id is None:
                continue
            if frame.record_id > best.get(frame.symbol, -1):
                best[frame.symbol] = frame.record_id
    return best
