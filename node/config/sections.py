"""The smaller sections: storage, study completion, HTTP, logging, imaging, routing, results, pipeline,
the HL7 listener and the clinical context."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from node.config.base import Section


class StorageConfig(Section):
    """Where received instances and the state database live."""

    root: Path = Path("./var")
    min_free_bytes: int = Field(
        default=5_000_000_000, ge=0, description="Below this many free bytes C-STORE answers A700."
    )
    retention_days: float = Field(
        default=14.0, ge=0, description="Received instances, results and quarantined objects of finished "
        "studies (complete, skipped) are deleted this long after they finished; 0 keeps them forever. "
        "Failed and undelivered studies are kept until an operator acts.")


class StudyConfig(Section):
    """When a study counts as complete."""

    stable_seconds: float = Field(default=5.0, gt=0)


class HttpConfig(Section):
    """The HTTP endpoint for /metrics, /healthz, /startupz and /readyz (and the routes beside them), and how long
    a request body may pause on any of the node's HTTP listeners."""

    host: str = Field(default="127.0.0.1", description="Loopback by default; 0.0.0.0 for every interface (the "
                      "Helm chart sets it: the kubelet's probes and Prometheus come from outside the pod).")
    port: int = Field(default=9102, ge=0, le=65535, description="0 picks a free port.")
    body_idle_seconds: float = Field(default=30.0, ge=1, le=3600, description="How long a request body (a STOW-RS "
                                     "upload, a feedback verdict) may pause before it is answered 408 (the STOW-RS "
                                     "parts whole by then stay stored); on every HTTP listener of the node, "
                                     "dicomweb.stow's own and engine serve's too. Longer for slow WAN links or "
                                     "proxies that buffer.")


class LogConfig(Section):
    """Structured logging."""

    level: str = "INFO"
    format: Literal["json", "console"] = "json"

    @field_validator("level")
    @classmethod
    def _check_level(cls, level: str) -> str:
        level = level.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("level is one of DEBUG, INFO, WARNING, ERROR")
        return level


class ImagingConfig(Section):
    """How studies become model inputs."""

    max_images: int = Field(default=4, ge=1, le=32, description="Images per study sent to the model (never more "
                            "than the model was trained with: 4).")
    volume_frames: int = Field(default=2, ge=1, le=32, description="Slices of a CT/MR volume, frames of a cine, "
                               "sampled as training did (2); a routing task may set its own.")
    ecg_as_image: bool = Field(default=False, description="Give a model that takes no ECG a paper-style plot of it "
                               "(outside the model's training; every result says so). Off: such ECG studies are "
                               "skipped.")


class RoutingConfig(Section):
    """Which studies are read, and how."""

    rules: Path | None = Field(default=None, description="The routing rules file; unset: the rules the node ships "
                               "with (node/routing/rules.yaml, the training populations of QoQ-Med's tasks).")


class ResultsConfig(Section):
    """Which result objects are made."""

    secondary_capture: bool | Literal["projection"] = Field(
        default="projection", description="A burned-in Secondary Capture per key image: projection (only of images "
        "without patient geometry: radiographs, mammograms, photographs), true (of every key image) or false.")
    pdf_report: bool = Field(
        default=True, description="An AI report per study version as a DICOM Encapsulated PDF (its own series): "
        "the question, answer, full reasoning, key images with their boxes, the context given, caveats and "
        "provenance, for viewers that show no SR text (OHIF shows it).")
    critical_labels: tuple[str, ...] = Field(
        default=("Pneumothorax", "Has Hemorrhage", "Acute PE"), description="Answer labels that are critical "
        "findings: their ORU flags the answer AA and asks for stat priority (TQ1), so the RIS worklist can move "
        "the study up; counted in qoqnode_critical_findings_total. Case-insensitive.")


class PipelineConfig(Section):
    """How stable studies are read: batching, parallel imaging and bounded retries."""

    batch_size: int = Field(default=4, ge=1, le=64, description="Studies given to the engine in one batch.")
    imaging_workers: int = Field(default=2, ge=1, le=64, description="Threads decoding and resizing images.")
    max_attempts: int = Field(default=3, ge=1, le=100, description="Tries per study before it is parked as failed.")
    retry_seconds: float = Field(default=30.0, ge=0, description="Wait before a failed study is tried again, "
                                 "doubling with each further try.")
    batches_in_flight: int = Field(
        default=1, ge=1, le=16, description="Engine batches running at once. Above 1 for engines that batch in "
        "flight themselves (tensorrt-llm, openai): new studies join while earlier ones are still generating.")


class Hl7ListenerConfig(Section):
    """The MLLP listener for orders, laboratory results and patient updates (the clinical context)."""

    enabled: bool = False
    host: str = Field(default="127.0.0.1", description="Address to listen on (0.0.0.0 for every interface).")
    port: int = Field(default=2575, ge=0, le=65535, description="0 picks a free port.")
    allowed_sending_applications: list[str] = Field(
        default_factory=list, description="MSH-3 values allowed to send; others are answered AR. Empty: any.")
    receiving_application: str = Field(default="QOQNODE", description="MSH-3 of the node's ACKs.")
    receiving_facility: str = Field(default="RADIOLOGY", description="MSH-4 of the node's ACKs.")
    max_connections: int = Field(default=16, ge=1, le=1024, description="Connections open at once; more are closed.")
    idle_timeout_seconds: float = Field(default=120.0, gt=0, description="A connection silent this long is closed.")
    max_message_bytes: int = Field(default=1_000_000, ge=1024, description="Longer messages are answered AE.")


class ContextConfig(Section):
    """Where the patient's context comes from, beyond what the node receives (each task's policy is in routing)."""

    pacs: str | None = Field(
        default=None, description="The destinations.dicom entry to query for prior studies (C-FIND, Study Root) and "
        "retrieve them from (C-GET), or the destinations.dicomweb entry (QIDO-RS, WADO-RS); null: only studies the "
        "node holds.")
    order_wait_seconds: float = Field(
        default=0.0, ge=0, description="A study whose task wants its order waits up to this long (from when it "
        "became stable) for the order to arrive over HL7, then is read without it.")
    default_authority: str = Field(
        default="", description="The assigning authority of patient identifiers that name none (DICOM Issuer of "
        "Patient ID absent, PID-3.4 empty), so both sides key the same patient.")
    gather_workers: int = Field(
        default=2, ge=1, le=32, description="Threads gathering studies' context (store, PACS queries and "
        "retrievals), apart from the imaging threads, so a slow PACS never holds up image decoding.")
    gather_seconds: float = Field(
        default=120.0, gt=0, description="How long a study's context may take to gather; past it the study is read "
        "with what the node already holds (the PACS costs the priors, never the read).")
