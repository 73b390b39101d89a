"""The shared outbound HTTP client (node/http_client.py): TLS against a CA bundle with our certificate,
and where the line between transient and permanent answers lies."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from node.config import ClientTlsConfig
from node.http_client import is_transient, outbound_client, retry_after
from node.testing.loopback import LOOPBACK
from node.tls import client_tls_context
from tests.helpers import make_pki


class _Peer(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        subject = dict(item[0] for item in self.request.getpeercert()["subject"])
        body = subject["commonName"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https_peer(pki: dict[str, Path]) -> Iterator[str]:
    """An HTTPS server that asks for a client certificate signed by the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    context.load_cert_chain(str(pki["server_cert"]), str(pki["server_key"]))
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer((LOOPBACK, 0), _Peer)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://{LOOPBACK}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_tls_verifies_the_peer_against_the_ca_bundle_and_presents_our_certificate(pki, https_peer: str) -> None:
    tls = ClientTlsConfig(enabled=True, ca=pki["ca"], certificate=pki["client_cert"], private_key=pki["client_key"])
    with outbound_client(read_seconds=5, base_url=https_peer, tls=tls) as client:
        assert client.get("/").text == "qoq-test-client"
    with outbound_client(read_seconds=5, base_url=https_peer, tls=client_tls_context(tls)) as client:
        assert client.get("/").text == "qoq-test-client"  # a context made already (one for several clients)
    with outbound_client(read_seconds=5, base_url=https_peer, connect_retries=0) as client, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get("/")  # the system store does not know the test CA


def test_transient_and_permanent_answers() -> None:
    def answer(status: int, **headers: str) -> httpx.Response:
        return httpx.Response(status, headers=headers)

    assert [s for s in (200, 400, 401, 403, 404, 408, 409, 413, 425, 429, 500, 502, 503, 504)
            if is_transient(answer(s))] == [408, 425, 429, 500, 502, 503, 504]
    assert is_transient(httpx.ConnectError("refused")) and is_transient(httpx.ReadTimeout("slow"))
    assert not is_transient(ValueError("not HTTP"))
    assert retry_after(answer(503, **{"Retry-After": "7"})) == 7.0
    assert retry_after(answer(503, **{"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})) is None
    assert retry_after(answer(503)) is None
