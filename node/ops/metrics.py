"""Prometheus metrics of the node. Labels never carry patient data.

Each node owns its own registry, so several nodes can live in one process (tests).
Gauges that mirror state (studies by state, free disk) are read at scrape time from
their source of truth rather than kept in step by hand.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from node import __version__

PREFIX = "qoqnode"

#: C-STORE latency buckets (seconds): from a cached small object to a slow disk.
CSTORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Pipeline stage buckets (seconds): a replayed CR in well under a second to a 32B model on a busy GPU.
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
TOKENS_PER_SECOND_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class _StateCollector(Collector):
    """Reads study counts, outbox depth and free disk space when Prometheus scrapes."""

    def __init__(self, studies_by_state: Callable[[], dict[str, int]],
                 outbox_counts: Callable[[], dict[tuple[str, str], int]], storage_root: Path) -> None:
        self._studies_by_state = studies_by_state
        self._outbox_counts = outbox_counts
        self._storage_root = storage_root

    def collect(self) -> Iterator[GaugeMetricFamily]:
        studies = GaugeMetricFamily(f"{PREFIX}_studies", "Studies by processing state.", labels=["state"])
        for state, count in sorted(self._studies_by_state().items()):
            studies.add_metric([state], count)
        yield studies
        outbox = GaugeMetricFamily(f"{PREFIX}_outbox_items",
                                   "Outbox items per destination and state (pending, sent, dead, cancelled: its "
                                   "result rejected).",
                                   labels=["destination", "state"])
        for (destination, state), count in sorted(self._outbox_counts().items()):
            outbox.add_metric([destination, state], count)
        yield outbox
        free = GaugeMetricFamily(f"{PREFIX}_storage_free_bytes", "Free bytes on the spool's filesystem.")
        free.add_metric([], shutil.disk_usage(self._storage_root).free)
        yield free


class Metrics:
    """All the node's metrics, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Info(f"{PREFIX}_build", "The node's version.", registry=r).info({"version": __version__})
        self.associations_open = Gauge(
            f"{PREFIX}_dicom_associations_open", "DICOM associations open now.", registry=r
        )
        self.associations = Counter(
            f"{PREFIX}_dicom_associations", "DICOM associations established.", registry=r
        )
        self.associations_rejected = Counter(
            f"{PREFIX}_dicom_associations_rejected",
            "DICOM association requests rejected, by reason.",
            ["reason"],
            registry=r,
        )
        self.cstore_requests = Counter(
            f"{PREFIX}_cstore_requests",
            "C-STORE requests answered, by outcome (stored, duplicate, own_result: one of the node's own results "
            "sent back and let go, ignored: a class in dicom.ignored_sop_classes, acknowledged and let go, "
            "rejection_note: an IOCM rejection note of the node's results, read and let go, failed).",
            ["outcome"],
            registry=r,
        )
        self.results_rejected = Counter(
            f"{PREFIX}_results_rejected", "Study versions' results rejected by an IHE IOCM rejection note (a Key "
            "Object Selection titled with a rejection code), by the code (113001, 113037, 113038, 113039).",
            ["reason"], registry=r,
        )
        self.cstore_bytes = Counter(
            f"{PREFIX}_cstore_received_bytes", "Dataset bytes received in C-STORE requests.", registry=r
        )
        self.cstore_seconds = Histogram(
            f"{PREFIX}_cstore_duration_seconds",
            "Time from a complete C-STORE request to its response (checks, write, fsync, commit).",
            buckets=CSTORE_BUCKETS,
            registry=r,
        )
        self.cstore_failures = Counter(
            f"{PREFIX}_cstore_failures", "C-STORE requests refused, by reason.", ["reason"], registry=r
        )
        self.study_transitions = Counter(
            f"{PREFIX}_study_transitions", "Study state changes, by new state.", ["state"], registry=r
        )

        self.stage_seconds = Histogram(
            f"{PREFIX}_stage_duration_seconds",
            "Per study: read (stable to results queued), delivery (queued to every destination done) and "
            "end_to_end (last instance received to every destination done).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.pipeline_failures = Counter(
            f"{PREFIX}_pipeline_failures", "Failed study reads, by stage (imaging, engine, results).", ["stage"],
            registry=r,
        )
        self.result_objects_omitted = Counter(
            f"{PREFIX}_result_objects_omitted",
            "Result objects that could not be made for a study and were left out (seg, presentation_state,"
            " kos, sc, pdf, oru); the SR still carries every finding.", ["kind"], registry=r,
        )
        self.critical_findings = Counter(
            f"{PREFIX}_critical_findings", "Studies read with a critical finding (results.critical_labels), flagged "
            "for the worklist in their ORU.", registry=r,
        )
        self.engine_seconds = Histogram(
            f"{PREFIX}_engine_batch_duration_seconds", "Time the engine took per batch.", buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.engine_batch_size = Histogram(
            f"{PREFIX}_engine_batch_size", "Studies per engine batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.engine_tokens_per_second = Histogram(
            f"{PREFIX}_engine_tokens_per_second", "Generated tokens per second of each engine batch.",
            buckets=TOKENS_PER_SECOND_BUCKETS, registry=r,
        )
        self.engine_tokens = Counter(
            f"{PREFIX}_engine_generated_tokens", "Tokens generated by the engine.", registry=r
        )
        self.engine_available = Gauge(
            f"{PREFIX}_engine_available",
            "0 while the engine cannot be reached (a remote engine server is down): studies wait, else 1.",
            registry=r,
        )
        self.retention_purged = Counter(
            f"{PREFIX}_retention_purged",
            "What retention deleted: finished studies (files, results, rows), quarantined objects, HL7 messages "
            "(with their orders and lab results) and priors retrieved from the PACS.",
            ["kind"],
            registry=r,
        )
        self.model_loaded = Gauge(
            f"{PREFIX}_model_loaded", "1 when the engine has loaded its model and is serving, else 0.", registry=r
        )
        self.hl7_messages = Counter(
            f"{PREFIX}_hl7_messages_received",
            "HL7 messages received by the listener, by type (ORM^O01, OMI^O23, ORU^R01, ADT^A08, ADT^A40, other, "
            "unreadable) and outcome (accepted, duplicate, error: answered AE, rejected: answered AR, failed: could "
            "not be stored now).", ["type", "outcome"], registry=r,
        )
        self.priors_retrieved = Counter(
            f"{PREFIX}_context_priors_retrieved", "Prior studies retrieved from the PACS as context.", registry=r
        )
        self.prior_retrieval_failures = Counter(
            f"{PREFIX}_context_retrieval_failures",
            "Failed queries or retrievals of prior studies from the PACS (the study is read without them).",
            ["step"], registry=r,
        )
        self.context_missing = Counter(
            f"{PREFIX}_context_missing", "An order or lab results a study's task asks for that did not go with it, "
            "by item (order, labs) and reason (other_patient, no_issuer: the identifiers' authorities differ; "
            "no_patient_id, no_order, no_labs).", ["item", "reason"], registry=r,
        )
        self.studies_read = Counter(
            f"{PREFIX}_studies_read", "Studies given to the engine, by whether any patient context (order, labs, "
            "prior studies, ECG) went with them.", ["context"], registry=r,
        )
        self.answers = Counter(
            f"{PREFIX}_answers", "Answers queued, per task and answer label (the task's closed set; other: a "
            "label outside it; none: no label).", ["task", "label"], registry=r,
        )
        self.stow_requests = Counter(
            f"{PREFIX}_stow_requests", "STOW-RS requests answered, by HTTP status class (2xx: the instances stored, "
            "all or some; 4xx: refused (token, media type, a bad body) or none stored; 5xx: the node is stopping or "
            "cannot read its tokens file).", ["status"], registry=r,
        )
        self.outbox_attempts = Counter(
            f"{PREFIX}_outbox_attempts",
            "Delivery attempts per destination, by outcome (accepted, retry, rejected).",
            ["destination", "outcome"],
            registry=r,
        )

    def start_at_zero(self, counter: Counter, label_values: Iterable[str]) -> None:
        """Export ``counter`` at 0 for each label value before its first event, so that the first
        event is an increase Prometheus sees (``increase()`` of a series born at 1 is nothing)."""
        for value in label_values:
            counter.labels(value)

    def watch_state(self, studies_by_state: Callable[[], dict[str, int]],
                    outbox_counts: Callable[[], dict[tuple[str, str], int]], storage_root: Path) -> None:
        """Export study counts, outbox depth and free disk, read from their sources at scrape time."""
        self.registry.register(_StateCollector(studies_by_state, outbox_counts, storage_root))

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
