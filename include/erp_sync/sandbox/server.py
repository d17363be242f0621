"""HTTP/1.1 on an asyncio protocol (httptools parser, uvloop when installed): one thread, one core,
keep-alive, responses written straight from cached JSON bytes."""

from __future__ import annotations

import asyncio
import logging
import socket
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

from erp_sync.sandbox.app import Request, Response, SandboxApp

log = logging.getLogger("erp_sync.sandbox")
MAX_BODY = 1 << 20


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class HttpProtocol(asyncio.Protocol):
    def __init__(self, app: SandboxApp) -> None:
        self.app = app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = "127.0.0.1"
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._assigned = 0  # responses are numbered in request order ...
        self._written = 0  # ... and written in that order
        self._ready: dict[int, tuple[bytes, bytes, bool]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transport is not a subclass
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = peer[0]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write_now(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", b"", False
            )

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        request = Request(
            method=self.parser.get_method().decode(),
            path=unquote(parsed.path.decode("latin-1")),
            query=(parsed.query or b"").decode("latin-1"),
            headers=self._headers,
            body=b"".join(self._body)[:MAX_BODY],
            peer=self.peer,
        )
        keep_alive = self.parser.should_keep_alive()
        try:
            response = self.app.handle(request)
        except Exception:  # a bug must not kill the server: answer like Stripe's api_error
            log.exception("unhandled error for %s %s", request.method, request.path)
            response = Response(500, b'{"error":{"type":"api_error","message":"internal sandbox error"}}')
        head = self._head(response, keep_alive)
        serial = self._assigned
        self._assigned += 1
        if response.delay_s > 0 or serial != self._written:
            loop = asyncio.get_running_loop()
            loop.call_later(response.delay_s, self._deliver, serial, head, response.body, keep_alive)
        else:
            self._deliver(serial, head, response.body, keep_alive)

    def _deliver(self, serial: int, head: bytes, body: bytes, keep_alive: bool) -> None:
        """Write responses in request order, even when some of them were delayed."""
        self._ready[serial] = (head, body, keep_alive)
        while self._written in self._ready:
            h, b, k = self._ready.pop(self._written)
            self._written += 1
            self._write_now(h, b, k)

    @staticmethod
    def _head(response: Response, keep_alive: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {response.status} {_reason(response.status)}".encode(),
            b"Content-Type: " + response.content_type,
            f"Content-Length: {len(response.body)}".encode(),
            b"Connection: keep-alive" if keep_alive else b"Connection: close",
        ]
        lines.extend(f"{k}: {v}".encode() for k, v in response.headers)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _write_now(self, head: bytes, body: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if len(body) < 65536:
            self.transport.write(head + body)
        else:  # big pages: no extra copy of the body
            self.transport.write(head)
            self.transport.write(body)
        if not keep_alive:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is in the venv; plain asyncio also works
        return asyncio.new_event_loop()


async def start_server(app: SandboxApp, host: str, port: int) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: HttpProtocol(app), host, port, backlog=1024, reuse_address=True)
