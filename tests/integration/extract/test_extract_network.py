"""Network failures over real sockets: refused connections and read timeouts are retried under the
policy, then fail naming the endpoint; a server that recovers is read normally."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from erp_sync.clients import BearerSecretKey, RetryExhaustedError, RetryPolicy, SaaSClient
from erp_sync.clients.errors import TransientNetworkError
from erp_sync.clients.transport import Urllib3Transport
from erp_sync.streams import get_stream

pytestmark = pytest.mark.integration
NO_WAIT = RetryPolicy(max_attempts=3, base_delay_s=0.0, sleep=lambda s: None)


def _read(client: SaaSClient) -> list[str]:
    pages = client.iter_pages(
        get_stream("customers"), mode="full", window_start=None, window_end=datetime.now(UTC)
    )
    return [r["id"] for p in pages for r in p.records]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_retried_then_names_the_endpoint() -> None:
    port = _free_port()  # nothing listens there any more
    client = SaaSClient(
        f"http://127.0.0.1:{port}", BearerSecretKey("sk_x"), retry=NO_WAIT, progress=lambda s, st: None
    )
    with pytest.raises(
        RetryExhaustedError, match=rf"GET http://127\.0\.0\.1:{port}/v1/customers: .*3 attempts"
    ):
        _read(client)
    assert client.stats.requests == 3 and client.stats.retries == 2


@pytest.fixture
def silent_then_ok_server() -> Iterator[tuple[str, list[int]]]:
    """Accepts connections; the first one never gets an answer (read timeout), later ones do."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[int] = []
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            if len(accepted) == 1:
                held.append(conn)  # say nothing
                continue
            conn.recv(65536)
            body = b'{"object":"list","data":[{"id":"cus_1"}],"has_more":false}'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(timeout=10)
        for conn in held:
            conn.close()
        listener.close()


def test_a_read_timeout_is_retried(silent_then_ok_server: tuple[str, list[int]]) -> None:
    base_url, accepted = silent_then_ok_server
    client = SaaSClient(
        base_url, BearerSecretKey("sk_x"), timeout=(1, 0.5), retry=NO_WAIT, progress=lambda s, st: None
    )
    assert _read(client) == ["cus_1"]
    assert client.stats.retries == 1 and len(accepted) == 2


def test_the_real_transport_reports_no_response_as_transient() -> None:
    transport = Urllib3Transport()
    with pytest.raises(TransientNetworkError):
        transport.send(
            "GET", f"http://127.0.0.1:{_free_port()}/x", params=(), headers={}, data=None, timeout=(1, 1)
        )
    transport.close()
