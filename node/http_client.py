"""Outbound HTTP (OpenAI-compatible engines, DICOMweb peers): one pooled :class:`httpx.Client` per peer.

:func:`outbound_client` makes it: connect and read timeouts, connection retries in the transport
(a refused or timed-out connect is tried again at once, :data:`CONNECT_RETRIES` times: nothing was sent),
a bounded keep-alive pool, TLS against a CA bundle (and our client certificate) through
:func:`node.tls.client_tls_context`, no redirects followed. Whether an answer or an error is worth another
try later — the caller's own retry loop or outbox — is :func:`is_transient`'s and :func:`retry_after`'s
to say, so every client of the node draws the line between transient and permanent at the same place.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import httpx

from node.config import ClientTlsConfig
from node.tls import client_tls_context

#: Answers worth another try: the server is overloaded, restarting or failing for now.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Seconds a connection may take to open (capped by the read timeout when that is shorter).
CONNECT_SECONDS = 10.0
#: Retries of a connection that could not be opened (refused, reset, timed out), inside one request.
CONNECT_RETRIES = 2


def outbound_client(
    *, read_seconds: float, base_url: str = "", tls: ClientTlsConfig | ssl.SSLContext | None = None,
    max_connections: int = 16, headers: Mapping[str, str] | None = None, connect_retries: int = CONNECT_RETRIES,
) -> httpx.Client:
    """A pooled client for one peer: ``read_seconds`` for each read (and write), at most
    :data:`CONNECT_SECONDS` to connect, a failed connect tried ``connect_retries`` more times (0 for a
    caller whose own retry loop counts them); TLS verified against ``tls.ca`` (else the system store)
    when ``tls`` is enabled, our certificate presented when it has one — or by ``tls`` itself when it is a
    context made already (:func:`node.tls.client_tls_context`: several clients of one peer share it)."""
    if isinstance(tls, ssl.SSLContext):
        verify: ssl.SSLContext | bool = tls
    else:
        verify = client_tls_context(tls) if tls is not None and tls.enabled else True
    transport = httpx.HTTPTransport(
        verify=verify, retries=connect_retries,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))
    timeout = httpx.Timeout(read_seconds, connect=min(CONNECT_SECONDS, read_seconds))
    return httpx.Client(base_url=base_url, transport=transport, timeout=timeout, headers=headers,
                        follow_redirects=False)


def is_transient(outcome: httpx.Response | Exception) -> bool:
    """Whether a request may succeed when tried again: a transport failure (cannot connect, timed out,
    connection dropped) or an answer in :data:`RETRYABLE_STATUS`; any other answer is the request's own
    fault."""
    if isinstance(outcome, httpx.Response):
        return outcome.status_code in RETRYABLE_STATUS
    return isinstance(outcome, httpx.TransportError)


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After`` header asks to wait (its delay-seconds form), else None."""
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None
