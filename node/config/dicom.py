"""The storage SCP's section: who may connect, how, and with which TLS."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from node.config.base import AeTitle, Section

#: Objects the node does not read and that a PACS forwards with a study (other AI results, reports): taken
#: in, they would make the study a new version and read it again. Grayscale/Colour Softcopy Presentation
#: State, Key Object Selection, Segmentation, Basic Text/Enhanced/Comprehensive/Comprehensive 3D SR.
DEFAULT_IGNORED_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.11.2", "1.2.840.10008.5.1.4.1.1.88.59",
    "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34",
)


class TlsConfig(Section):
    """DICOM TLS (PS3.15 B.1): a server certificate, and a CA to verify client certificates."""

    enabled: bool = False
    certificate: Path | None = None
    private_key: Path | None = None
    ca: Path | None = Field(
        default=None, description="When set, clients must present a certificate signed by this CA."
    )

    @model_validator(mode="after")
    def _paths_when_enabled(self) -> TlsConfig:
        if self.enabled:
            for name in ("certificate", "private_key"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name} is required when TLS is enabled")
        return self


class DicomConfig(Section):
    """The storage SCP: who may connect and how."""

    ae_title: AeTitle = "QOQNODE"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535, description="0 picks a free port.")
    allowed_calling_ae_titles: list[AeTitle] = Field(
        default_factory=list, description="Empty: any calling AE title is accepted."
    )
    max_associations: int = Field(default=32, ge=1, le=1024, description="Established associations at once; more "
                                  "are rejected (transient, local limit). Connections still negotiating do not count.")
    max_pending_connections: int = Field(default=64, ge=1, le=4096, description="Connections that have not completed "
                                         "their association at once; more are closed on accept.")
    ignored_sop_classes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IGNORED_SOP_CLASSES), description="SOP classes acknowledged and let go: "
        "never stored, never a new version of their study (other systems' reports, presentation states, key "
        "object selections and segmentations, which the node does not read).")
    max_pdu_bytes: int = Field(
        default=1_048_576, ge=0, description="The maximum length of a P-DATA-TF PDU the node announces and "
        "accepts; a longer one is aborted as its header arrives. 0 = no limit: a sender may then put a whole "
        "dataset in one PDU, which is read whole into memory."
    )
    max_instance_bytes: int = Field(default=4_000_000_000, ge=1024, description="An encoded dataset longer than "
                                    "this is refused (A700) and noted in the quarantine; checked as it arrives (beyond "
                                    "4 MiB it goes to disk fragment by fragment, never whole into memory).")
    max_inflated_bytes: int = Field(default=2_000_000_000, ge=1024, description="A deflated dataset inflating to "
                                    "more is refused (A700) as it inflates, on arrival, a MiB at a time; it is kept "
                                    "inflated, so no read inflates it again.")
    timeout_seconds: float = Field(default=60.0, gt=0, description="DIMSE and network idle timeout.")
    association_request_seconds: float = Field(
        default=10.0, gt=0, description="From the TCP connection (and TLS handshake) to the complete "
        "A-ASSOCIATE-RQ: a connection silent longer is closed and frees its slot (ARTIM).")
    tls: TlsConfig = TlsConfig()
