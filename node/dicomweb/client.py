"""The HTTP client of one DICOMweb archive: the node's shared outbound client (``node/http_client.py``: pooled,
connect and read timeouts, connection attempts retried, no redirects) with the archive's root as its base
URL, its auth, and TLS checked against its CA bundle (else the system's). A request itself is never sent twice
by the client: the outbox retries deliveries, and a failed prior retrieval is tried with the next study."""

from __future__ import annotations

import httpx

from node import __version__
from node.config import ClientTlsConfig, DicomWebDestination
from node.dicomweb.auth import ClientCredentialsAuth, make_auth
from node.http_client import outbound_client
from node.tls import client_tls_context

USER_AGENT = f"qoq-node/{__version__}"


def open_client(destination: DicomWebDestination) -> httpx.Client:
    """A pooled client for ``destination`` (its root as the base URL); :func:`close_client` closes it. The TLS
    context is made once, for it and its OAuth2 token endpoint's client."""
    tls = client_tls_context(ClientTlsConfig(enabled=True, ca=destination.ca)) if destination.ca is not None \
        else None
    client = outbound_client(read_seconds=destination.timeout_seconds, base_url=destination.root + "/", tls=tls,
                             max_connections=4, headers={"User-Agent": USER_AGENT})
    auth = make_auth(destination.auth, destination.timeout_seconds, tls)
    if auth is not None:
        client.auth = auth
    return client


def close_client(client: httpx.Client) -> None:
    """Close a client of :func:`open_client`, and its OAuth2 token endpoint's client when it has one."""
    if isinstance(client.auth, ClientCredentialsAuth):
        client.auth.close()
    client.close()
