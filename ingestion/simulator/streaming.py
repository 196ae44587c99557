"""The WebSocket side of the simulator: client connections, their subscriptions and time unit,
frames written to them in bulk, and the connection faults (drops, ``serverShutdown``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ingestion.simulator import control, frames
from ingestion.simulator.connection import SimConnection, http_response
from ingestion.simulator.options import ResolvedOptions
from ingestion.simulator.rest import RestApi

log = logging.getLogger("cryptoflow.simulator")

MAX_WRITE_BUFFER = 64 * 2**20  # a client this far behind is dropped as a slow consumer


class StreamHub:
    """Connections of a simulator (mixed into ``Simulator``, which sets these attributes)."""

    options: ResolvedOptions
    rest: RestApi
    connections: set[SimConnection]
    counters: collections.Counter[str]
    _client_seen: asyncio.Event

    def _broadcast(self, events: list[frames.Event]) -> None:
        if not events:
            return
        encoded: dict[tuple[bool, bool], list[bytes]] = {}
        present = {stream for stream, _, _ in events}
        for conn in list(self.connections):
            if not conn.is_open or not conn.subs.streams:
                continue
            key = (conn.subs.combined, conn.subs.micros)
            if key not in encoded:
                encoded[key] = frames.encode_frames(events, *key)
            subs = set(conn.subs.streams)
            if present <= subs:  # the common case: it listens to everything in the batch
                chunk = encoded[key]
            else:
                chunk = [f for (s, _, _), f in zip(events, encoded[key], strict=True) if s in subs]
            if chunk:
                self._write(conn, b"".join(chunk), len(chunk))

    def _write(self, conn: SimConnection, data: bytes, n_frames: int) -> None:
        transport = conn.transport
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.counters["slow_consumer_drops"] += 1
            log.warning("dropping slow consumer %s buffered=%d", conn.remote_address,
                        transport.get_write_buffer_size())  # fmt: skip
            transport.abort()
            return
        transport.write(data)
        self.counters["frames_sent"] += n_frames

    # ----- faults
    async def _every(self, seconds: float, action: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            await action()

    async def drop_all(self) -> None:
        """Abort every client connection (no close frame), like a network failure."""
        n = 0
        for conn in list(self.connections):
            conn.transport.abort()
            n += 1
        self.counters["connections_dropped"] += n
        log.info("fault: dropped connections=%d", n)

    async def announce_shutdown(self) -> None:
        """Send ``serverShutdown`` to every client, then close them after the grace period."""
        conns = [c for c in self.connections if c.is_open]
        now_us = time.time_ns() // 1000
        for conn in conns:
            event_time = now_us if conn.subs.micros else now_us // 1000
            text = frames.server_shutdown(event_time, conn.subs.combined)
            conn.transport.write(frames.text_frame(text.encode()))
        self.counters["shutdowns_sent"] += len(conns)
        log.info("fault: serverShutdown sent connections=%d", len(conns))
        await asyncio.sleep(self.options.shutdown_grace)
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close(1001, "server shutdown")

    # ----- connections
    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if control.streams_from_path(request.path) is None:
                return http_response(404, b'{"code":-1000,"msg":"Unknown stream endpoint."}', {})
            if control.micros_from_path(request.path) is None:
                return http_response(400, b'{"code":-1100,"msg":"Invalid timeUnit."}', {})
            return None
        ip = conn.remote_address[0] if conn.remote_address else "?"
        r = self.rest.handle(request.path, ip, request.headers)
        return http_response(r.status, r.body, r.headers)

    async def _handle_ws(self, conn: SimConnection) -> None:
        path = conn.request.path if conn.request is not None else ""  # set by the handshake
        combined, streams = control.streams_from_path(path) or (False, [])
        conn.subs.combined = combined
        conn.subs.micros = bool(control.micros_from_path(path))
        conn.subs.add(streams)
        self.connections.add(conn)
        self._client_seen.set()
        self.counters["connections_total"] += 1
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(
            self.options.max_lifetime,
            lambda: asyncio.ensure_future(conn.close(1000, "connection lifetime exceeded")),
        )
        try:
            async for message in conn:
                reply = control.handle(message, conn.subs)
                await conn.send(_dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            expiry.cancel()
            self.connections.discard(conn)
            if conn.over_message_limit:
                self.counters["message_limit_disconnects"] += 1


def _dumps(reply: dict) -> str:
    return json.dumps(reply, separators=(",", ":"))
