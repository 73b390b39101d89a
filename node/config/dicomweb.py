"""A DICOMweb archive: where results go by STOW-RS and priors come from by QIDO-RS and WADO-RS, how the node
authenticates to it (none, basic, a bearer token from a file, OAuth2 client credentials) and its TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, HttpUrl, model_validator

from node.config.base import NAME_PATTERN, Section


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
