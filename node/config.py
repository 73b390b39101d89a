"""The node's whole configuration as typed models, loaded from YAML with environment overrides.

Environment variables named ``QOQ_NODE__SECTION__KEY`` override the file: the double
underscore separates levels and the value is read as YAML, so
``QOQ_NODE__DICOM__PORT=11113`` and ``QOQ_NODE__DICOM__ALLOWED_CALLING_AE_TITLES='[PACS1]'``
both work.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from node.errors import NodeError

ENV_PREFIX = "QOQ_NODE__"

AE_TITLE_PATTERN = r"^[\x20-\x5b\x5d-\x7e]{1,16}$"  # PS3.5 AE VR: no backslash, no control chars
_AE_TITLE = re.compile(AE_TITLE_PATTERN)


class ConfigError(NodeError):
    """The configuration cannot be used; the message names the bad key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError("an AE title is 1-16 printable characters, not all spaces, no backslash")
    return value.strip()


#: An AE title: checked here, and its pattern is in the JSON schema (the Helm chart's values schema).
AeTitle = Annotated[str, Field(json_schema_extra={"pattern": AE_TITLE_PATTERN}), AfterValidator(_check_ae_title)]


#: Objects the node does not read and that a PACS forwards with a study (other AI results, reports): taken
#: in, they would make the study a new version and read it again. Grayscale/Colour Softcopy Presentation
#: State, Key Object Selection, Segmentation, Basic Text/Enhanced/Comprehensive/Comprehensive 3D SR.
DEFAULT_IGNORED_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.11.2", "1.2.840.10008.5.1.4.1.1.88.59",
    "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34",
)


class TlsConfig(_Section):
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
                path = getattr(self, name)
                if path is None:
                    raise ValueError(f"{name} is required when TLS is enabled")
                if not path.is_file():
                    raise ValueError(f"{name} {path} is not a readable file")
            if self.ca is not None and not self.ca.is_file():
                raise ValueError(f"ca {self.ca} is not a readable file")
        return self


class DicomConfig(_Section):
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
        default=0, ge=0, description="Largest P-DATA PDU the node accepts; 0 = no limit."
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



class StorageConfig(_Section):
    """Where received instances and the state database live."""

    root: Path = Path("./var")
    min_free_bytes: int = Field(
        default=5_000_000_000, ge=0, description="Below this many free bytes C-STORE answers A700."
    )
    retention_days: float = Field(
        default=14.0, ge=0, description="Received instances, results and quarantined objects of finished "
        "studies (complete, skipped) are deleted this long after they finished; 0 keeps them forever. "
        "Failed and undelivered studies are kept until an operator acts.")


class StudyConfig(_Section):
    """When a study counts as complete."""

    stable_seconds: float = Field(default=5.0, gt=0)


class HttpConfig(_Section):
    """The HTTP endpoint for /metrics, /healthz and /readyz."""

    host: str = "0.0.0.0"
    port: int = Field(default=9102, ge=0, le=65535, description="0 picks a free port.")


class LogConfig(_Section):
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


class TransformersOptions(_Section):
    """Speed options of the ``transformers`` backend (they matter on CUDA; the CPU reference keeps the defaults)."""

    attention: Literal["sdpa", "flash_attention_2", "eager"] = Field(
        default="sdpa", description="flash_attention_2 needs the flash-attn package and a CUDA GPU.")
    static_cache: bool = Field(default=False, description="Static KV cache: fixed shapes, for torch.compile.")
    compile: bool = Field(default=False, description="torch.compile the language model's forward (CUDA).")
    vision: Literal["torch", "onnx"] = Field(
        default="torch", description="onnx: the vision tower on ONNX Runtime (TensorRT, CUDA or CPU provider), "
        "exported once per checkpoint into engine.cache_dir.")


class TensorRtLlmOptions(_Section):
    """The ``tensorrt-llm`` backend: TensorRT-LLM's LLM API on the node's own GPUs."""

    quantization: Literal["none", "fp8"] = Field(
        default="none", description="fp8: FP8 weights, from the checkpoint 'qoq-node engine prepare' makes.")
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    kv_cache_fraction: float = Field(default=0.6, gt=0, lt=1, description="Share of free GPU memory for KV cache.")
    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Sequences in flight at once.")
    max_num_tokens: int = Field(default=16384, ge=256, description="Tokens per scheduler step (prefill chunk).")
    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="GPUs per replica (2-4 for 32B).")
    replicas: int = Field(default=1, ge=1, le=64, description="Model replicas, each on its own GPU(s) (7B: 1/GPU).")
    warmup: bool = Field(default=True, description="Run one request at start so the first study is not slow.")


class EngineConfig(_Section):
    """The model backend."""

    backend: Literal["transformers", "tensorrt-llm", "openai", "replay"] = "transformers"
    model: Path | None = Field(
        default=None,
        description="Checkpoint directory (QoQ-Med-VL-7B/32B). Unset: a tiny random TEST model is built "
        "under storage.root on first start, and every result says it comes from a test model.",
    )
    family: Literal["auto", "qwen2.5-vl", "qwen3-vl", "omni"] = Field(
        default="auto", description="The model family: auto reads it from the checkpoint's config.json (with the "
        "openai or replay backend, which have no checkpoint here, auto means qwen2.5-vl).")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_new_tokens: int = Field(default=1024, ge=1, le=32768, description="Longest answer (training allowed 4000; "
                                "fewer than ~1000 cut the reasoning short).")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0: greedy, reproducible (the default); "
                               "training validated at 0.5.")
    min_pixels: int | None = Field(default=None, ge=1024, description="Pre-resize lower bound in pixels; unset: the "
                                   "family's trained bound (65536).")
    max_pixels: int | None = Field(default=None, ge=1024, description="Pre-resize upper bound in pixels; unset: the "
                                   "family's trained bound (524288).")
    replay_responses: Path | None = Field(default=None, description="JSON file of recorded responses (replay).")
    cache_dir: Path | None = Field(
        default=None, description="Where prepared artefacts are kept (FP8 checkpoint, ONNX vision tower); default: "
        "next to the model (<model>.qoq-node-cache). Set it when the model volume is read-only.")
    transformers: TransformersOptions = TransformersOptions()
    tensorrt_llm: TensorRtLlmOptions = TensorRtLlmOptions()
    url: str | None = Field(
        default=None, pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="openai backend: the server's API root, e.g. http://qoq-engine:8000/v1.")
    served_model: str | None = Field(default=None, description="openai backend: the model name the server serves.")
    api_key_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="openai backend: environment variable holding the API key (never the key itself).")
    timeout_s: float = Field(default=300.0, gt=0, description="openai backend: seconds one request may take.")
    max_concurrency: int = Field(default=8, ge=1, le=1024, description="openai backend: requests in flight at once.")
    retries: int = Field(default=3, ge=0, le=20, description="openai backend: retries of a request the server "
                         "could not answer (connection error, timeout, 429, 5xx), with backoff.")

    @model_validator(mode="after")
    def _consistent(self) -> EngineConfig:
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels is above max_pixels")
        if self.backend == "replay" and self.replay_responses is None:
            raise ValueError("replay_responses is required for the replay backend")
        if self.replay_responses is not None and not self.replay_responses.is_file():
            raise ValueError(f"replay_responses {self.replay_responses} is not a readable file")
        if self.backend == "openai":
            missing = [key for key in ("url", "served_model") if getattr(self, key) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)} required for the openai backend")
            if self.api_key_env is not None and self.api_key_env not in os.environ:
                raise ValueError(f"api_key_env names {self.api_key_env}, which is not set in the environment")
        return self


class ImagingConfig(_Section):
    """How studies become model inputs."""

    max_images: int = Field(default=4, ge=1, le=32, description="Images per study sent to the model (never more "
                            "than the model was trained with: 4).")
    volume_frames: int = Field(default=2, ge=1, le=32, description="Slices of a CT/MR volume, frames of a cine, "
                               "sampled as training did (2); a routing task may set its own.")
    ecg_as_image: bool = Field(default=False, description="Give a model that takes no ECG a paper-style plot of it "
                               "(outside the model's training; every result says so). Off: such ECG studies are "
                               "skipped.")


class RoutingConfig(_Section):
    """Which studies are read, and how."""

    rules: Path = Path("conf/routing.yaml")


class ResultsConfig(_Section):
    """Which result objects are made."""

    secondary_capture: bool | Literal["projection"] = Field(
        default="projection", description="A burned-in Secondary Capture per key image: projection (only of images "
        "without patient geometry: radiographs, mammograms, photographs), true (of every key image) or false.")
    critical_labels: tuple[str, ...] = Field(
        default=("Pneumothorax", "Has Hemorrhage", "Acute PE"), description="Answer labels that are critical "
        "findings: their ORU flags the answer AA and asks for stat priority (TQ1), so the RIS worklist can move "
        "the study up; counted in qoqnode_critical_findings_total. Case-insensitive.")


class PipelineConfig(_Section):
    """How stable studies are read: batching, parallel imaging and bounded retries."""

    batch_size: int = Field(default=4, ge=1, le=64, description="Studies given to the engine in one batch.")
    imaging_workers: int = Field(default=2, ge=1, le=64, description="Threads decoding and resizing images.")
    max_attempts: int = Field(default=3, ge=1, le=100, description="Tries per study before it is parked as failed.")
    retry_seconds: float = Field(default=30.0, ge=0, description="Wait before a failed study is tried again, "
                                 "doubling with each further try.")
    batches_in_flight: int = Field(
        default=1, ge=1, le=16, description="Engine batches running at once. Above 1 for engines that batch in "
        "flight themselves (tensorrt-llm, openai): new studies join while earlier ones are still generating.")


_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class ClientTlsConfig(_Section):
    """TLS towards a PACS: the CA that signed its certificate, and our client certificate if it asks."""

    enabled: bool = False
    ca: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None

    @model_validator(mode="after")
    def _readable(self) -> ClientTlsConfig:
        if self.enabled:
            if (self.certificate is None) != (self.private_key is None):
                raise ValueError("certificate and private_key go together")
            for name in ("ca", "certificate", "private_key"):
                path = getattr(self, name)
                if path is not None and not path.is_file():
                    raise ValueError(f"{name} {path} is not a readable file")
        return self


class DicomDestination(_Section):
    """A PACS that receives the result objects (C-STORE)."""

    name: str = Field(pattern=_NAME)
    ae_title: AeTitle
    host: str
    port: int = Field(ge=1, le=65535)
    tls: ClientTlsConfig = ClientTlsConfig()
    timeout_seconds: float = Field(default=30.0, gt=0)


class Hl7Destination(_Section):
    """An EHR (or interface engine) that receives ORU^R01 messages over MLLP."""

    name: str = Field(pattern=_NAME)
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


class DestinationsConfig(_Section):
    """Where results go, and how delivery is retried (per destination, so one dead one blocks no other)."""

    dicom: list[DicomDestination] = Field(default_factory=list)
    hl7: list[Hl7Destination] = Field(default_factory=list)
    retry_base_seconds: float = Field(default=5.0, gt=0, description="First retry delay; doubles each attempt.")
    retry_cap_seconds: float = Field(default=300.0, gt=0, description="Longest retry delay.")
    max_attempts: int = Field(default=200, ge=1, description="Attempts before an item becomes a dead letter.")
    probe_seconds: float = Field(default=5.0, gt=0, description="While results wait for a retry, the destination "
                                 "is probed (C-ECHO, MLLP connect) this often; once it answers they go at once.")

    @model_validator(mode="after")
    def _unique_names(self) -> DestinationsConfig:
        names = [d.name for d in self.dicom] + [d.name for d in self.hl7]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"destination names must be unique: {', '.join(duplicates)}")
        return self


class Hl7ListenerConfig(_Section):
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


class ContextConfig(_Section):
    """Where the patient's context comes from, beyond what the node receives (each task's policy is in routing)."""

    pacs: str | None = Field(
        default=None, description="The destinations.dicom entry to query for prior studies (C-FIND, Study Root) and "
        "retrieve them from (C-GET); null: only studies the node holds.")
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


class NodeConfig(_Section):
    """The whole node configuration (``conf/node.yaml``)."""

    dicom: DicomConfig = DicomConfig()
    storage: StorageConfig = StorageConfig()
    study: StudyConfig = StudyConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    routing: RoutingConfig = RoutingConfig()
    imaging: ImagingConfig = ImagingConfig()
    engine: EngineConfig = EngineConfig()
    results: ResultsConfig = ResultsConfig()
    pipeline: PipelineConfig = PipelineConfig()
    destinations: DestinationsConfig = DestinationsConfig()
    hl7_listener: Hl7ListenerConfig = Hl7ListenerConfig()
    context: ContextConfig = ContextConfig()

    @model_validator(mode="after")
    def _context_pacs_is_a_destination(self) -> NodeConfig:
        names = [d.name for d in self.destinations.dicom]
        if self.context.pacs is not None and self.context.pacs not in names:
            raise ValueError(f"context.pacs names {self.context.pacs!r}, which is not a destinations.dicom entry")
        return self


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay ``QOQ_NODE__A__B=value`` variables onto the nested mapping ``data``."""
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not keys:
            continue
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return data


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
    return "; ".join(lines)


def _kinds(annotation: Any) -> tuple[Any, ...]:
    """The types an annotation admits (``Path | None`` → Path, NoneType; ``list[X]`` → X)."""
    return typing.get_args(annotation) or (annotation,)


def _anchor_paths(data: Any, model: type[BaseModel], base: Path) -> None:
    """Make the relative paths in ``data`` (a mapping for ``model``, as read from a file) relative to ``base``."""
    if not isinstance(data, dict):
        return
    for name, field in model.model_fields.items():
        value = data.get(name)
        if value is None:
            continue
        kinds = _kinds(field.annotation)
        if Path in kinds and isinstance(value, str) and value and not Path(value).is_absolute():
            data[name] = os.path.normpath(base / value)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                for item in value if isinstance(value, list) else [value]:
                    _anchor_paths(item, kind, base)


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Load and validate the configuration from ``path`` (or defaults) plus the environment. Relative
    paths in the file are relative to the file's folder; those of the environment and the defaults, to
    the working directory.

    Raises ConfigError with a message naming each bad key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded or {}
        _anchor_paths(data, NodeConfig, Path(path).resolve().parent)
    data = _apply_env(data, os.environ if environ is None else environ)
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        source = str(path) if path is not None else "configuration"
        raise ConfigError(f"{source}: {_describe(exc)}") from exc
