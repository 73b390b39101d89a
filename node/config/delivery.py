"""Where results go: the PACS (DIMSE or DICOMweb) and EHR destinations, TLS towards a PACS, and how delivery
is retried."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from node.config.base import NAME_PATTERN, AeTitle, Section
from node.config.dicomweb import DicomWebDestination


class ClientTlsConfig(Section):
    """TLS towards a PACS: the CA that signed its certificate, and our client certificate if it asks."""

    enabled: bool = False
    ca: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> ClientTlsConfig:
        if self.enabled and (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        return self


class DicomDestination(Section):
    """A PACS that receives the result objects (C-STORE)."""

    name: str = Field(pattern=NAME_PATTERN)
    ae_title: AeTitle
    host: str
    port: int = Field(ge=1, le=65535)
    tls: ClientTlsConfig = ClientTlsConfig()
    timeout_seconds: float = Field(default=30.0, gt=0)


class Hl7Destination(Section):
    """An EHR (or interface engine) that receives ORU^R01 messages over MLLP."""

    name: str = Field(pattern=NAME_PATTERN)
    host: str
    port: int = Field(ge=1, le=65535)
    sending_application: str = "QOQNODE"
    sending_facility: str = "RADIOLOGY"
    receiving_application: str = "EHR"
    receiving_facility: str = "HOSPITAL"
    filler_order_number: Literal["accession", "study_uid"] = Field(
        default="accession", description="What ORC-3/OBR-3 carry."
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="How long to wait for the ACK.")


class DestinationsConfig(Section):
    """Where results go, and how delivery is retried (per destination, so one dead one blocks no other)."""

    dicom: list[DicomDestination] = Field(default_factory=list)
    hl7: list[Hl7Destination] = Field(default_factory=list)
    dicomweb: list[DicomWebDestination] = Field(default_factory=list)
    retry_base_seconds: float = Field(default=5.0, gt=0, description="First retry delay; doubles each attempt.")
    retry_cap_seconds: float = Field(default=300.0, gt=0, description="Longest retry delay.")
    max_attempts: int = Field(default=200, ge=1, description="Attempts before an item becomes a dead letter.")
    probe_seconds: float = Field(default=5.0, gt=0, description="While results wait for a retry, the destination "
                                 "is probed (C-ECHO, MLLP connect, a DICOMweb QIDO-RS) this often; once it "
                                 "answers they go at once.")

    @model_validator(mode="after")
    def _unique_names(self) -> DestinationsConfig:
        names = [d.name for d in self.dicom] + [d.name for d in self.hl7] + [d.name for d in self.dicomweb]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"destination names must be unique: {', '.join(duplicates)}")
        return self
