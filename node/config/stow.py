"""The DICOMweb origin server's section: the STOW-RS receiver, who may store through it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from node.config.base import AeTitle, Section
from node.config.dicom import TlsConfig


class StowConfig(Section):
    """The STOW-RS receiver (``POST /dicomweb/studies[/{study}]`` on the node's HTTP server): off unless enabled.

    Each client is a bearer token in ``tokens_file`` (a mounted secret, read again when it changes) with a
    name, the client's identity as an AE title is a DIMSE peer's: recorded with its instances, in logs and
    quarantine notes, and allow-listed by ``allowed_clients`` as ``dicom.allowed_calling_ae_titles`` lists AE
    titles. Instances go through the C-STORE path: the ``dicom.*`` size limits, ``dicom.ignored_sop_classes``,
    the quarantine, fsync and commit before the answer."""

    enabled: bool = False
    tokens_file: Path | None = Field(
        default=None, description="The clients' bearer tokens (as feedback.tokens): a directory (a mounted "
        "Secret: each file a token of 16+ characters, its name the client's name) or a YAML/JSON file of [{name, "
        "token}]; a name is AE-title-like (1-16 characters). Read again when it changes. Required when enabled.")
    allowed_clients: list[AeTitle] = Field(
        default_factory=list, description="Client names that may store; a known token of another client is "
        "answered 403. Empty: every client in tokens_file.")
    max_parts: int = Field(default=10_000, ge=1, description="Parts in one request; the request is answered 400 "
                           "past it (the parts before stay stored).")
    port: int | None = Field(default=None, ge=0, le=65535, description="None: served on the http port. A "
                             "port: a listener of its own (host, tls), apart from /metrics and probes; 0: any free.")
    host: str = Field(default="127.0.0.1", description="The own listener's address (with port).")
    tls: TlsConfig = Field(default=TlsConfig(), description="HTTPS on the own listener (with port); with ca set, "
                           "clients must present a certificate that CA signed (mTLS).")

    @model_validator(mode="after")
    def _tokens_when_enabled(self) -> StowConfig:
        if self.enabled and self.tokens_file is None:
            raise ValueError("tokens_file is required when the STOW-RS receiver is enabled")
        if self.tls.enabled and self.port is None:
            raise ValueError("tls needs a listener of the receiver's own: set port")
        return self


class DicomwebConfig(Section):
    """The node as a DICOMweb origin server."""

    stow: StowConfig = StowConfig()
