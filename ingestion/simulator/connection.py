"""One client connection of the simulator: Binance's incoming-message limit, late handling of
client frames (``pong_delay``), and HTTP responses for the REST side of the port."""

from __future__ import annotations

import collections
import http
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State

from ingestion.simulator import control


class SimConnection(ServerConnection):
    """A client connection that enforces Binance's incoming-message limit and, with
    ``pong_delay``, handles incoming frames late."""

    pong_delay: float = 0.0
    message_limit: int = 5  # per second: text, binary, ping and pong frames count, as on Binance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subs = control.Subscriptions(combined=True)
        self.over_message_limit = False
        self._message_times: collections.deque[float] = collections.deque()
        self._delayed: collections.deque[tuple[float, bytes]] = collections.deque()

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode in _COUNTED:
            now = self.loop.time()
            times = self._message_times
            times.append(now)
            while times[0] <= now - 1.0:
                times.popleft()
            if len(times) > self.message_limit and not self.over_message_limit:
                self.over_message_limit = True
                self.loop.create_task(self.close(1008, "Too many messages"))
                return
        super().process_event(event)

    def data_received(self, data: bytes) -> None:
        if self.pong_delay <= 0 or self.protocol.state is not State.OPEN:
            super().data_received(data)
            return
        self._delayed.append((self.loop.time() + self.pong_delay, data))
        if len(self._delayed) == 1:
            self.loop.call_later(self.pong_delay, self._drain_delayed)

    def _drain_delayed(self) -> None:
        now = self.loop.time()
        while self._delayed and self._delayed[0][0] <= now + 1e-3:
            super().data_received(self._delayed.popleft()[1])
        if self._delayed:
            self.loop.call_later(self._delayed[0][0] - now, self._drain_delayed)

    @property
    def is_open(self) -> bool:
        return self.protocol.state is State.OPEN


_COUNTED = (Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.PONG)


def http_response(status: int, body: bytes, headers: dict[str, str]) -> Response:
    h = Headers()
    h["Content-Type"] = "application/json;charset=UTF-8"
    h["Content-Length"] = str(len(body))
    h["Connection"] = "close"
    for k, v in headers.items():
        h[k] = v
    return Response(status, http.HTTPStatus(status).phrase, h, body)
