"""The one WebSocket connection supervisor: backoff, watchdog, rotation, serverShutdown.

Ingestion subscribes to every stream of every symbol of the chosen kinds, at most 1024 streams
per combined connection (``stream_urls``); one ``Supervisor`` per URL. ``Supervisor.run``
keeps exactly one *primary* session reading its combined stream:

* a session that fails to connect or drops is replaced after an exponential backoff with
  jitter (reset once a session delivered a frame); unreachable endpoints are logged clearly
  on every attempt and retried for ever;
* a session that waits on its socket for ``ws_stall_timeout_s`` without a frame is closed
  (stalled feed); time spent handling a frame (e.g. held by the producer's back-pressure while
  Kafka is down) is not silence;
* after ``ws_rotate_after_s`` (Binance cuts at 24 h) or on a ``serverShutdown`` event a new
  session is opened *before* the old one is closed: both read for ``ws_rotate_overlap_s``
  after the new one delivered, so nothing is missed (the overlap's duplicates are counted);
* websockets answers the server's pings itself; everything the client sends goes through a
  limiter that never allows more than ``ws_max_messages_per_s`` messages in any second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import random
import socket
import time
import urllib.error
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from cryptoflow.core.config import Settings
from cryptoflow.core.errors import CryptoflowError
from cryptoflow.core.streams import subscriptions
from ingestion.frames import Frame
from ingestion.status import CONNECTED, DISCONNECTED, IngestStats

log = logging.getLogger(__name__)

#: ``handler(raw, receive_time_ms, connection_id) -> Frame``: publishes one frame.
FrameHandler = Callable[[bytes, int, str], Awaitable[Frame]]
#: ``connector(url)``: an async context manager yielding an open WebSocket connection.
Connector = Callable[[str], AbstractAsyncContextManager[ClientConnection]]


def open_connection(url: str) -> AbstractAsyncContextManager[ClientConnection]:
    """The real connector: websockets with the limits and keepalive ingestion uses."""
    return connect(
        url,
        compression=None,
        max_queue=1024,
        max_size=1 << 20,
        open_timeout=10,
        ping_interval=20,
        ping_timeout=20,
        close_timeout=2,
    )


def combined_stream_url(base: str, streams: Sequence[str], time_unit: str = "MILLISECOND") -> str:
    """``<base>/stream?streams=btcusdt@trade/btcusdt@aggTrade``, plus ``&timeUnit=MICROSECOND``
    when times are asked in µs (milliseconds are Binance's default: nothing is added)."""
    url = f"{base.rstrip('/')}/stream?streams={'/'.join(streams)}"
    return url if time_unit == "MILLISECOND" else f"{url}&timeUnit={time_unit}"


def stream_urls(settings: Settings) -> list[str]:
    """The combined-stream URL of each connection: every stream of every symbol of the chosen
    kinds, at most 1024 streams per connection (``cryptoflow.core.streams.subscriptions``)."""
    subs = subscriptions(settings.symbols, settings.stream_kinds)
    return [combined_stream_url(settings.ws_url, sub.streams, settings.binance_time_unit)
            for sub in subs]  # fmt: skip


def backoff_delays(initial: float, maximum: float, rng: random.Random | None = None):
    """Exponential delays with jitter: attempt n waits uniformly in [d/2, d], d = initial*2^n."""
    rng = rng or random.Random()
    for n in itertools.count():
        d = min(maximum, initial * (2**n))
        yield rng.uniform(d / 2, d)


class SendLimiter:
    """At most ``per_second`` sends in any sliding one-second window."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.clock = clock
        self.sent: deque[float] = deque()

    def delay(self) -> float:
        """Seconds to wait before the next send is allowed (0 = now)."""
        now = self.clock()
        while self.sent and now - self.sent[0] >= 1.0:
            self.sent.popleft()
        if len(self.sent) < self.per_second:
            return 0.0
        return 1.0 - (now - self.sent[0])

    async def acquire(self) -> None:
        while (wait := self.delay()) > 0:
            await asyncio.sleep(wait)
        self.sent.append(self.clock())


class Session:
    """One WebSocket connection reading the combined stream."""

    def __init__(self, conn_id: str, supervisor: Supervisor) -> None:
        self.id = conn_id
        self.sup = supervisor
        self.ws: ClientConnection | None = None
        self.delivered = asyncio.Event()  # first frame arrived
        self.frames = 0
        # monotonic time the pending recv() started; None while a frame is being handled,
        # so only time spent waiting on the socket counts as silence
        self.waiting_since: float | None = None
        self.stalled = False
        self.task = asyncio.create_task(self._run(), name=f"ws-{conn_id}")

    async def send(self, message: str) -> None:
        """Send a control message (SUBSCRIBE...) within the outgoing rate limit."""
        assert self.ws is not None
        await self.sup.limiter.acquire()
        await self.ws.send(message)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

    async def _run(self) -> None:
        s = self.sup.settings
        async with self.sup.connector(self.sup.url) as ws:
            self.ws = ws
            log.info("connected connection=%s url=%s", self.id, self.sup.url)
            self.sup.connected()
            watchdog = asyncio.create_task(self._watchdog(ws, s))
            handler, clock, now_ms = self.sup.handler, time.monotonic, time.time
            try:
                while True:
                    self.waiting_since = clock()
                    try:
                        raw = await ws.recv(decode=False)
                    except ConnectionClosed:
                        if self.stalled:
                            return  # closed by the watchdog
                        raise
                    self.waiting_since = None  # the handler may wait (back-pressure): not silence
                    frame = await handler(raw, int(now_ms() * 1000), self.id)
                    self.frames += 1
                    if frame.event is not None and frame.event == "serverShutdown":
                        log.info("serverShutdown on connection=%s: rotating", self.id)
                        self.sup.request_rotation(self)
                    if self.frames == 1:
                        self.delivered.set()
            finally:
                watchdog.cancel()

    async def _watchdog(self, ws: ClientConnection, s: Settings) -> None:
        """Closes a connection whose pending recv() waited ``ws_stall_timeout_s``; asks for
        rotation when the connection is old. Time inside the frame handler never counts.
        (A timer per frame would cost more than the frame itself at high rates.)"""
        opened = time.monotonic()
        tick = min(1.0, s.ws_stall_timeout_s / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            waiting_since = self.waiting_since
            if waiting_since is not None and now - waiting_since > s.ws_stall_timeout_s:
                log.warning(
                    "stalled connection=%s waited %ds on the socket without a frame: reconnecting",
                    self.id,
                    s.ws_stall_timeout_s,
                )
                self.stalled = True
                await ws.close()
                return
            if now - opened > s.ws_rotate_after_s:
                self.sup.request_rotation(self)


class Supervisor:
    """Keeps one live session, reconnecting and rotating as described in the module doc."""

    def __init__(
        self,
        settings: Settings,
        handler: FrameHandler,
        stats: IngestStats,
        stop: asyncio.Event,
        url: str | None = None,
        connector: Connector = open_connection,
        ids: Iterator[int] | None = None,
    ) -> None:
        self.settings = settings
        self.connector = connector
        self.handler = handler
        self.stats = stats
        self.stop = stop
        self.url = url or stream_urls(settings)[0]
        self.limiter = SendLimiter(settings.ws_max_messages_per_s)
        self._ids = ids or itertools.count(1)  # shared by the supervisors of one run: c1, c2...
        self._rotate = asyncio.Event()
        self._rotating_from: Session | None = None
        self.primary: Session | None = None

    def request_rotation(self, session: Session) -> None:
        if session is self.primary and self._rotating_from is None:
            self._rotating_from = session
            self._rotate.set()

    def _new_session(self) -> Session:
        return Session(f"c{next(self._ids)}", self)

    def connected(self) -> None:
        """A session is open: the state status views show (``IngestStats.connection``)."""
        st = self.stats
        if st.connection != CONNECTED:
            st.connection, st.connection_since, st.problem = CONNECTED, time.time(), None

    def disconnected(self, error: str, problem: str | None, attempt: int) -> None:
        """The primary session ended or could not be opened (``attempt`` in a row)."""
        st = self.stats
        if st.connection != DISCONNECTED:
            st.connection, st.connection_since = DISCONNECTED, time.time()
        st.connect_attempts, st.last_error, st.problem = attempt, error, problem

    async def run(self) -> None:
        s = self.settings
        delays = backoff_delays(s.ws_backoff_initial_ms / 1000, s.ws_backoff_max_ms / 1000)
        attempt = 0
        self.primary = self._new_session()
        stop_wait = asyncio.create_task(self.stop.wait())
        try:
            while not self.stop.is_set():
                rotate_wait = asyncio.create_task(self._rotate.wait())
                await asyncio.wait(
                    {self.primary.task, stop_wait, rotate_wait},
                    return_when=asyncio.FIRST_COMPLETED,
                )
                rotate_wait.cancel()
                if self.stop.is_set():
                    break
                if self._rotate.is_set():
                    await self._rotate_now()
                    continue
                # the primary session ended: find out why, back off, reconnect
                session = self.primary
                failure = session.task.exception()
                if isinstance(failure, CryptoflowError):
                    raise failure  # e.g. the producer failed for good
                error = _task_error(session.task)
                if session.frames:  # it worked for a while: start the backoff over
                    delays = backoff_delays(
                        s.ws_backoff_initial_ms / 1000, s.ws_backoff_max_ms / 1000
                    )
                    attempt = 0
                attempt += 1
                delay = next(delays)
                self.stats.add("reconnects")
                self.disconnected(error or "closed", _task_problem(session.task), attempt)
                log.warning(
                    "connection=%s to %s ended after %d frames (%s); reconnecting in %.1fs "
                    "(attempt %d)",
                    session.id,
                    self.url,
                    session.frames,
                    error or "closed",
                    delay,
                    attempt,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if not self.stop.is_set():
                    self.primary = self._new_session()
        finally:
            stop_wait.cancel()
            if self.primary is not None:
                await self.primary.close()

    async def _rotate_now(self) -> None:
        """Open the next session, let both read for the overlap, then close the old one."""
        old = self.primary
        assert old is not None
        new = self._new_session()
        self.stats.add("reconnects")
        delivered = asyncio.create_task(new.delivered.wait())
        stopped = asyncio.create_task(self.stop.wait())
        await asyncio.wait(
            {delivered, new.task, stopped},
            timeout=self.settings.ws_stall_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        delivered.cancel()
        stopped.cancel()
        if new.delivered.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.settings.ws_rotate_overlap_s)
            log.info("rotated connection=%s -> %s", old.id, new.id)
            await old.close()
            self.primary = new
        else:  # the new one did not come up: keep the old one, try again later
            log.warning("rotation: new connection=%s delivered nothing; keeping %s", new.id, old.id)
            await new.close()
        self._rotating_from = None
        self._rotate.clear()


def _task_error(task: asyncio.Task) -> str | None:
    if task.cancelled():
        return "cancelled"
    e = task.exception()
    if e is None:
        return None
    if isinstance(e, ConnectionClosed):
        return f"closed code={e.rcvd.code if e.rcvd else 'none'}"
    if isinstance(e, (OSError, InvalidHandshake, InvalidURI, TimeoutError)):
        return f"cannot connect: {type(e).__name__}: {e}"
    return f"{type(e).__name__}: {e}"


#: ``connection_problem`` kinds: the exchange cannot be reached at all (DNS, refused, timed
#: out, no route), or it refuses this location (HTTP 451 / 403 from Binance).
UNREACHABLE, RESTRICTED = "unreachable", "restricted"
#: HTTP statuses Binance answers from a restricted location (451 on api/stream.binance.com;
#: 403 from its CDN).
RESTRICTED_STATUS = (451, 403)
_NO_ROUTE_ERRNOS = {
    errno.ECONNREFUSED, errno.ETIMEDOUT, errno.ENETUNREACH, errno.EHOSTUNREACH,
    errno.ENETDOWN, errno.EHOSTDOWN, errno.ECONNRESET,
}  # fmt: skip


def http_status(e: BaseException) -> int | None:
    """The HTTP status of a rejected WebSocket handshake or REST request, if ``e`` is one."""
    if isinstance(e, InvalidStatus):
        return e.response.status_code
    if isinstance(e, urllib.error.HTTPError):
        return e.code
    return None


def connection_problem(e: BaseException | None) -> str | None:
    """What kind of problem ``e`` (a connect or REST error) is, for the hint a status view
    gives once: ``UNREACHABLE`` (no route to the exchange), ``RESTRICTED`` (it refuses this
    location) or None (something else: the error alone says it). Follows ``__cause__`` and
    ``URLError.reason``."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        status = http_status(e)
        if status is not None:
            return RESTRICTED if status in RESTRICTED_STATUS else None
        if isinstance(e, (socket.gaierror, ConnectionRefusedError, TimeoutError)):
            return UNREACHABLE
        if isinstance(e, OSError) and e.errno in _NO_ROUTE_ERRNOS:
            return UNREACHABLE
        if isinstance(e, OSError) and e.errno is None and str(e).startswith("Multiple exc"):
            return UNREACHABLE  # asyncio: every address of the host failed to connect
        if isinstance(e, urllib.error.URLError) and isinstance(e.reason, BaseException):
            e = e.reason
            continue
        e = e.__cause__
    return None


def _task_problem(task: asyncio.Task) -> str | None:
    return None if task.cancelled() else connection_problem(task.exception())
