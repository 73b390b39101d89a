"""The HTTP client of one DICOMweb archive: its root as the base URL, its auth, TLS checked against its CA
bundle (else the system's), connect and read timeouts, a pool of kept-alive connections, and connection
attempts retried once (a request itself is never sent twice by the client: the outbox retries)."""

from __future__ import annotations

import ssl

import httpx

from node import __version__
from node.config import DicomWebDestination
from node.dicomweb.auth import make_auth

USER_AGENT = f"qoq-node/{__version__}"


def open_client(destination: DicomWebDestination) -> httpx.Client:
    """A pooled client for ``destination`` (its root as the base URL); close it when done."""
    timeout = httpx.Timeout(destination.timeout_seconds, connect=destination.connect_timeout_seconds)
    verify: ssl.SSLContext | bool = ssl.create_default_context(
        cafile=str(destination.ca)) if destination.ca is not None else True
    return httpx.Client(
        base_url=destination.root + "/", timeout=timeout,
        auth=make_auth(destination.auth, timeout, verify), headers={"User-Agent": USER_AGENT},
        transport=httpx.HTTPTransport(verify=verify, retries=1,
                                      limits=httpx.Limits(max_connections=4, max_keepalive_connections=2)))
