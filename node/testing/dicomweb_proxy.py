"""A DICOMweb proxy on loopback in front of a real server (Orthanc's ``/dicom-web``), for what a healthy server
does not do on demand: answer a status instead of forwarding (a 503 outage), forward a request to another
path (Orthanc then gives its own answer to it: a 409), ask for a bearer token and see every request's
headers, over HTTPS if asked; and a tiny OAuth2 token endpoint (``POST /token``, client credentials) whose
tokens it checks. A test double for the faults only: every answer it forwards is the real server's."""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import httpx

from node.testing.loopback import LOOPBACK

#: Headers not passed on (hop by hop, or remade by the proxy).
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


@dataclass
class Seen:
    """One request the proxy received."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class ProxyState:
    """What the proxy does and saw (the test changes it between requests)."""

    faults: list[int] = field(default_factory=list)  # statuses to answer next, one per request, in order
    rewrite: Callable[[str], str] | None = None  # the path a request is forwarded to
    require_token: bool = False  # answer 401 unless a token the endpoint issued (and not revoked) comes
    token_lifetime: int = 3600
    tokens: set[str] = field(default_factory=set)
    token_requests: list[dict[str, str]] = field(default_factory=list)  # each token request's form and auth
    seen: list[Seen] = field(default_factory=list)


class DicomWebProxy:
    """The proxy on a free loopback port in front of ``upstream`` (a base URL: Orthanc's)."""

    def __init__(self, upstream: str, tls: ssl.SSLContext | None = None) -> None:
        self.state = ProxyState()
        self._upstream = httpx.Client(base_url=upstream, timeout=60)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self._server.daemon_threads = True
        if tls is not None:  # HTTPS with this server context
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's base URL (the upstream's paths under it)."""
        return f"{self._scheme}://{LOOPBACK}:{self._server.server_address[1]}"

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (the archive answers 401 to it)."""
        with self._lock:
            self.state.tokens.clear()

    def _issue(self, form: dict[str, str], authorization: str) -> tuple[int, bytes]:
        token = secrets.token_hex(8)
        with self._lock:
            self.state.token_requests.append({**form, "authorization": authorization})
            self.state.tokens.add(token)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.state.token_lifetime}
        return 200, json.dumps(body).encode()

    def _fault(self, authorization: str) -> int | None:
        with self._lock:
            if self.state.faults:
                return self.state.faults.pop(0)
            if self.state.require_token and authorization.removeprefix("Bearer ") not in self.state.tokens:
                return 401
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:  # quiet
                pass

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                authorization = self.headers.get("Authorization", "")
                with proxy._lock:
                    proxy.state.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
                if self.path == "/token" and self.command == "POST":
                    status, answer = proxy._issue(dict(parse_qsl(body.decode())), authorization)
                    self._answer(status, answer, {"Content-Type": "application/json"})
                    return
                fault = proxy._fault(authorization)
                if fault is not None:
                    self._answer(fault, b"", {"Retry-After": "0"} if fault == 503 else {})
                    return
                headers.pop("Authorization", None)  # the upstream (Orthanc) has its own users, if any
                path = proxy.state.rewrite(self.path) if proxy.state.rewrite else self.path
                upstream = proxy._upstream.request(self.command, path, content=body, headers=headers)
                self._answer(upstream.status_code, upstream.content,
                             {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP})

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

        return Handler

    def __enter__(self) -> DicomWebProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()
