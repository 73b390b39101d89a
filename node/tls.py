"""TLS for the node's own DICOM associations towards a PACS (delivery, and queries for priors)."""

from __future__ import annotations

import ssl

from node.config import ClientTlsConfig


def client_tls_context(tls: ClientTlsConfig) -> ssl.SSLContext:
    """TLS towards a PACS: its certificate verified (against ``ca``, else the system store), and
    our client certificate presented when configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca) if tls.ca else None)
    if tls.certificate is not None and tls.private_key is not None:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    return context
