"""TLS is always verified: an HTTPS API signed by a private CA fails without `ca_bundle` (fatal, not
retried) and works with it. Real TLS over a loopback socket; the CA is generated per test."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from erp_sync.clients import BearerSecretKey, FatalApiError, SaaSClient
from erp_sync.streams import get_stream

pytestmark = pytest.mark.integration


def _cert(subject: str, issuer_key: ec.EllipticCurvePrivateKey | None, issuer: x509.Name | None, *, ca: bool):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


class _ListHandler(http.server.BaseHTTPRequestHandler):
    requests_seen = 0

    def do_GET(self) -> None:
        type(self).requests_seen += 1
        body = b'{"object":"list","data":[{"id":"cus_tls"}],"has_more":false}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def https_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca_key, ca_cert = _cert("erp-sync test CA", None, None, ca=True)
    key, cert = _cert("127.0.0.1", ca_key, ca_cert.subject, ca=False)
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ListHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _ListHandler.requests_seen = 0
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", tmp_path / "ca.pem"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _read(client: SaaSClient) -> list[str]:
    pages = client.iter_pages(
        get_stream("customers"), mode="full", window_start=None, window_end=dt.datetime.now(dt.UTC)
    )
    return [r["id"] for p in pages for r in p.records]


def test_an_unknown_ca_is_refused_and_not_retried(https_api: tuple[str, Path]) -> None:
    base_url, _ = https_api
    client = SaaSClient(base_url, BearerSecretKey("sk_test_tls"), progress=lambda s, st: None)
    with pytest.raises(FatalApiError, match="TLS verification failed"):
        _read(client)
    assert client.stats.retries == 0


def test_the_ca_bundle_option_trusts_a_private_ca(https_api: tuple[str, Path]) -> None:
    base_url, ca_pem = https_api
    client = SaaSClient(
        base_url, BearerSecretKey("sk_test_tls"), ca_bundle=str(ca_pem), progress=lambda s, st: None
    )
    assert _read(client) == ["cus_tls"]
    assert _ListHandler.requests_seen == 1
