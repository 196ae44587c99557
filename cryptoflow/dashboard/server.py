"""A small threaded stdlib HTTP server: the page at ``/``, its data at ``/api/data``."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any

import psycopg2

from cryptoflow.core.errors import CryptoflowError, first_line
from cryptoflow.dashboard.data import Source

log = logging.getLogger(__name__)
PAGE = files("cryptoflow.dashboard").joinpath("page.html")


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], source: Source, refresh_seconds: int):
        self.source = source
        self.page = (
            PAGE.read_text(encoding="utf-8")
            .replace("__REFRESH_MS__", str(refresh_seconds * 1000))
            .encode()
        )
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]  # server_address may be bytes, typeshed says
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path == "/api/data":
            self._data()
        elif path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {path}"})

    def _data(self) -> None:
        try:
            body = self.server.source.snapshot()
        except (psycopg2.Error, CryptoflowError) as e:
            reason = first_line(e)
            log.warning("dashboard data unavailable: %s", reason)
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": reason})
            return
        self._json(HTTPStatus.OK, body)

    def _json(self, status: HTTPStatus, body: Any) -> None:
        self._send(status, json.dumps(body, default=str).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("http %s", format % args)
