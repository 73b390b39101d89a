"""DICOMweb both ways. A DICOMweb archive: where results go by STOW-RS and priors come from by QIDO-RS and
WADO-RS, how the node authenticates to it (none, basic, a bearer token from a file, OAuth2 client credentials) and
its TLS. The node as a DICOMweb origin server (the ``dicomweb:`` section): the STOW-RS receiver and who may store
through it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, HttpUrl, TypeAdapter, model_validator

from node.config.base import NAME_PATTERN, AeTitle, Section
from node.config.dicom import TlsConfig

#: A STOW-RS client's name (in its tokens secret and ``allowed_clients``): AE-title-like, as a DIMSE peer's.
CLIENT_NAME: TypeAdapter[str] = TypeAdapter(AeTitle)


class DicomWebAuth(Section):
    """How the node authenticates to a DICOMweb archive; secrets are read from files (mounted Secrets), never
    written in the configuration."""

    kind: Literal["none", "basic", "bearer", "oauth2"] = Field(
        default="none", description="none; basic (user + password_file); bearer (token_file, read again when it "
        "changes); oauth2 (client credentials: token_url, client_id, client_secret_file, scope).")
    user: str = Field(default="", description="basic: the user name.")
    password_file: Path | None = Field(default=None, description="basic: a file holding the password.")
    token_file: Path | None = Field(default=None, description="bearer: a file holding the token (read again "
                                    "whenever it changes: a rotated Secret needs no restart).")
    token_url: HttpUrl | None = Field(default=None, description="oauth2: the token endpoint.")
    client_id: str = Field(default="", description="oauth2: the client's id.")
    client_secret_file: Path | None = Field(default=None, description="oauth2: a file holding the client secret.")
    scope: str = Field(default="", description="oauth2: the scope asked for (empty: none named).")

    @model_validator(mode="after")
    def _complete(self) -> DicomWebAuth:
        needs = {"basic": ("user", "password_file"), "bearer": ("token_file",),
                 "oauth2": ("token_url", "client_id", "client_secret_file")}.get(self.kind, ())
        missing = [name for name in needs if not getattr(self, name)]
        if missing:
            raise ValueError(f"auth kind {self.kind} needs {', '.join(missing)}")
        return self

    def files(self) -> dict[str, Path | None]:
        """The secret files this kind of auth reads, by key."""
        return {"basic": {"password_file": self.password_file}, "bearer": {"token_file": self.token_file},
                "oauth2": {"client_secret_file": self.client_secret_file}}.get(self.kind, {})


class DicomWebDestination(Section):
    """A DICOMweb archive (its root: Orthanc's ``http://host:8042/dicom-web``, a cloud DICOM store's URL):
    every result object is sent to it by STOW-RS; ``context.pacs`` may name it for priors."""

    name: str = Field(pattern=NAME_PATTERN)
    url: HttpUrl = Field(description="The DICOMweb root: STOW-RS is POST {url}/studies, QIDO-RS GET {url}/studies?…")
    auth: DicomWebAuth = DicomWebAuth()
    ca: Path | None = Field(default=None, description="A CA bundle the server's certificate is checked against "
                            "(default: the system's).")
    timeout_seconds: float = Field(default=60.0, gt=0, description="How long to wait for each read or write "
                                   "(a STOW-RS answer, a chunk of a WADO-RS retrieval); a connection gets at most "
                                   "10 s.")

    @property
    def root(self) -> str:
        """The DICOMweb root without its trailing slash."""
        return str(self.url).rstrip("/")


class StowConfig(Section):
    """The STOW-RS receiver (``POST /dicomweb/studies[/{study}]`` on the node's HTTP server): off unless enabled.

    Each client is a bearer token in ``tokens_file`` (a mounted secret, read again when it changes) with a
    name, the client's identity as an AE title is a DIMSE peer's: recorded with its instances, in logs and
    quarantine notes, and allow-listed by ``allowed_clients`` as ``dicom.allowed_calling_ae_titles`` lists AE
    titles. Instances go through the C-STORE path: the ``dicom.*`` size limits, ``dicom.ignored_sop_classes``,
    the quarantine, fsync and commit before the answer."""

    enabled: bool = False
    tokens_file: Path | None = Field(
        default=None, description="The clients' bearer tokens (as feedback.tokens_file): a directory (a mounted "
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


class DicomWebConfig(Section):
    """The node as a DICOMweb origin server."""

    stow: StowConfig = StowConfig()
