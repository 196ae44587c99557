"""The Kafka side of ingestion: an idempotent producer with a bounded buffer and back-pressure.

librdkafka's own queue is the bounded buffer (``producer_buffer_messages``). Messages never
time out (``message.timeout.ms=0``), so while the broker is down frames wait and are retried;
when the queue is full ``produce`` raises ``BufferError`` and the caller waits (the WebSocket
reader stops reading) until deliveries free space. A failed delivery is produced again, so a
frame that entered the producer is either delivered or still buffered. The delivery callback
only sets a failed frame aside (its slot in the queue is freed once the callback returns, so
waiting for room inside it would never end with a full queue); every poll produces the set-aside
frames again as far as there is room.

Hot path: only failed deliveries call back into Python (``delivery.report.only.error``), so
``delivered = produced - buffered - failed``; the delivery lag comes from librdkafka's own
statistics (queue + send-buffer latency + broker round trip) every few seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque

from confluent_kafka import KafkaError, KafkaException, Producer

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import ServiceError
from ingestion.status import IngestStats

log = logging.getLogger(__name__)

#: Record headers as ingestion writes them. confluent_kafka's stub asks for a
#: list[tuple[str, str | bytes | None]], and a list is invariant, so mypy rejects ours,
#: which the library takes as it is: the ``produce`` calls ignore that arg-type error.
Headers = list[tuple[str, bytes]]
#: A frame whose delivery failed: (topic, key, value, timestamp_ms, headers).
Failed = tuple[str, bytes | None, bytes | None, int, Headers]
COMPRESSIONS = ("lz4", "zstd", "snappy", "gzip", "none")


def producer_config(settings: Settings) -> dict:
    """librdkafka settings: idempotent, acks=all, compressed, large bounded queue.

    The same for one broker and a replicated cluster: ``acks=all`` waits for the topic's
    ``min.insync.replicas`` copies (two of three), idempotence (at most 5 requests in flight,
    endless retries) writes a retry after a leader change once, and nothing expires, so frames
    wait out a cluster below its in-sync minimum instead of being dropped."""
    if settings.producer_compression not in COMPRESSIONS:
        raise ServiceError(
            f"CRYPTOFLOW_PRODUCER_COMPRESSION={settings.producer_compression!r}: "
            f"expected one of {', '.join(COMPRESSIONS)}"
        )
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.producer_compression,
        "linger.ms": settings.producer_linger_ms,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": settings.producer_buffer_messages,
        "queue.buffering.max.kbytes": 512 * 1024,
        "message.timeout.ms": 0,  # never expire: wait for the broker to come back
        "partitioner": "murmur2_random",  # same partition for a key as Java clients / Spark
        "reconnect.backoff.max.ms": 2000,
        "delivery.report.only.error": True,  # no Python callback per delivered frame
        "statistics.interval.ms": 2000,
        "log_level": 3,
    }


class FrameProducer:
    """Produces raw frames keyed by symbol; counts deliveries; re-produces failed ones."""

    def __init__(self, settings: Settings, stats: IngestStats) -> None:
        self.stats = stats
        self.fatal: str | None = None
        # produce() calls accepted (a re-produced failure counts again): one counter for the
        # polling thread, one for the blocking (backfill / CSV) thread, so neither races
        self.produced = 0
        self.produced_blocking = 0
        self._failed: deque[Failed] = deque()  # failed deliveries, to be produced again
        self._producer = Producer(
            {
                **producer_config(settings),
                "error_cb": self._on_error,
                "on_delivery": self._on_delivery,
                "stats_cb": self._on_stats,
            }
        )

    # ----- callbacks (run inside poll/flush on the calling thread)
    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = str(err)
            log.error("kafka producer fatal error: %s", err)
        elif err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            log.warning("kafka unreachable, buffering frames: %s", err.str())

    def _on_stats(self, text: str) -> None:
        """Delivery lag: average time in librdkafka's queue and send buffer plus broker RTT."""
        lag_us = 0.0
        for broker in json.loads(text).get("brokers", {}).values():
            if broker.get("nodeid", -1) < 0:
                continue  # the bootstrap pseudo-broker
            lag_us = max(
                lag_us,
                sum(broker.get(k, {}).get("avg", 0) for k in ("int_latency", "outbuf_latency"))
                + broker.get("rtt", {}).get("avg", 0),
            )
        self.stats.delivery_lag_ms = lag_us / 1000.0

    def _on_delivery(self, err: KafkaError | None, msg) -> None:
        if err is None:  # only with delivery.report.only.error off
            return
        self.stats.delivery_errors += 1
        if self.stats.delivery_errors % 1000 == 1:  # one line per 1000 failures, not a flood
            log.warning(
                "delivery failed (%s); producing the frame again (failures=%d)",
                err.str(),
                self.stats.delivery_errors,
            )
        _, ts = msg.timestamp()
        # never produce here: this message holds its queue slot until the callback returns
        self._failed.append((msg.topic(), msg.key(), msg.value(), ts, msg.headers() or []))

    def _produce_failed(self) -> None:
        """Produce set-aside failed deliveries again, as many as the queue has room for."""
        while self._failed and not self.fatal:
            topic, key, value, ts, headers = self._failed[0]
            try:
                self._producer.produce(topic, value, key, timestamp=ts, headers=headers)  # type: ignore[arg-type]
            except BufferError:
                return
            except KafkaException as e:  # e.g. the topic was deleted under us
                self.fatal = f"cannot produce to {topic}: {e.args[0].str()}"
                return
            self._failed.popleft()
            self.produced += 1

    # ----- producing
    def try_produce(
        self, topic: str, key: bytes, value: bytes, timestamp_ms: int, headers: Headers
    ) -> bool:
        """Hand one frame to the producer; False when the bounded buffer is full."""
        try:
            self._producer.produce(topic, value, key, timestamp=timestamp_ms, headers=headers)  # type: ignore[arg-type]
            self.produced += 1
            return True
        except BufferError:
            return False
        except KafkaException as e:
            raise ServiceError(f"cannot produce to {topic}: {e.args[0].str()}") from e

    async def produce(
        self, topic: str, key: bytes, value: bytes, timestamp_ms: int, headers: Headers
    ) -> None:
        """Produce from the event loop, waiting (not reading further frames) while full."""
        if self.try_produce(topic, key, value, timestamp_ms, headers):
            return
        self.stats.backpressure_waits += 1
        while not self.try_produce(topic, key, value, timestamp_ms, headers):
            self.check()
            self._producer.poll(0)
            self._produce_failed()
            await asyncio.sleep(0.02)

    def produce_blocking(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        timestamp_ms: int,
        headers: Headers,
        serve_reports: bool = True,
    ) -> None:
        """Produce from a plain thread, blocking while the buffer is full.

        ``serve_reports=False`` for helper threads (backfill) whose owner polls the producer,
        so delivery callbacks stay on one thread.
        """
        while True:
            try:
                self._producer.produce(topic, value, key, timestamp=timestamp_ms, headers=headers)  # type: ignore[arg-type]
                self.produced_blocking += 1  # only ever one blocking producer thread at a time
                return
            except BufferError:
                pass
            except KafkaException as e:
                raise ServiceError(f"cannot produce to {topic}: {e.args[0].str()}") from e
            self.stats.add("backpressure_waits")
            self.check()
            if serve_reports:
                self._producer.poll(0.05)
                self._produce_failed()
            else:
                time.sleep(0.05)

    def poll(self, timeout: float = 0) -> None:
        """Serve delivery reports, update ``stats.delivered``; raise on a fatal error."""
        self._producer.poll(timeout)
        self._produce_failed()
        self._count_delivered()
        self.check()

    def _count_delivered(self) -> None:
        produced = self.produced + self.produced_blocking
        self.stats.delivered = produced - len(self._producer) - self.stats.delivery_errors

    def check(self) -> None:
        if self.fatal:
            raise ServiceError(f"the Kafka producer failed for good: {self.fatal}")

    @property
    def buffered(self) -> int:
        """Frames not delivered yet: in librdkafka's queue or set aside after a failure."""
        return len(self._producer) + len(self._failed)

    def flush(self, timeout: float) -> int:
        """Deliver what is buffered; returns how many frames are still undelivered."""
        deadline = time.monotonic() + timeout
        while self.buffered and time.monotonic() < deadline:
            self._producer.flush(min(1.0, max(deadline - time.monotonic(), 0.01)))
            self._produce_failed()
        self._producer.poll(0)
        self._produce_failed()
        self._count_delivered()
        left = self.buffered
        if left:
            log.warning("flush timed out: %d frames undelivered (restart resumes from Kafka)", left)
        return left
