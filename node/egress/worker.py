"""The outbox workers: one thread per destination drains that destination's queue.

Each worker takes the items that are due, sends them (a DICOM batch on one association, STOW-RS requests
to a DICOMweb archive, or HL7 messages one by one on a reused MLLP connection), and records every outcome in the store:
delivered, retried later with backoff and jitter, or dead-lettered. A destination that is down
only delays its own queue. After each attempt the studies involved are settled (complete or
undelivered) and their delivery latencies observed. While items wait for a retry, the destination is
probed (C-ECHO, a QIDO-RS, an MLLP connection) every ``destinations.probe_seconds``: once it answers, its queue
is due at once, not at the end of its backoff.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pydicom
from pydicom.errors import InvalidDicomError

from node.config import DestinationsConfig, DicomDestination, DicomWebDestination, Hl7Destination
from node.egress.dicom import DicomSender
from node.egress.dicomweb import StowSender
from node.egress.mllp import Delivery, MllpClient
from node.egress.outbox import next_state
from node.ops.logging import get_logger, uid_hash
from node.ops.metrics import Metrics
from node.store import COMPLETE, DEAD, OutboxItem, Store

log = get_logger("outbox")

#: How long an idle worker waits before looking at its queue again (it is also woken on new work).
IDLE_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Attempt:
    """What one send achieved for one item."""

    delivery: Delivery
    detail: str


#: Sends a batch; one outcome per item, or None for an item not tried (its destination went away).
SendBatch = Callable[[Sequence[OutboxItem]], list[Attempt | None]]
#: Whether the destination answers now.
Probe = Callable[[], bool]


class Sender(NamedTuple):
    """A destination's batch sender, its probe, and what closes its connections (called when its worker stops;
    None: it keeps none open)."""

    send: SendBatch
    probe: Probe
    close: Callable[[], None] | None = None


def dicom_sender(destination: DicomDestination, calling_ae: str) -> Sender:
    """Sends a batch of result objects to one PACS on one association (released after it); and its C-ECHO
    probe."""
    sender = DicomSender(calling_ae, destination.ae_title, destination.host, destination.port,
                         destination.timeout_seconds, destination.tls)

    def send(items: Sequence[OutboxItem]) -> list[Attempt | None]:
        attempts: dict[int, Attempt] = {}
        readable = []
        for item in items:
            try:
                readable.append((item, pydicom.dcmread(item.payload_path)))
            except (OSError, InvalidDicomError) as exc:  # the result file is gone: nothing to resend
                attempts[item.id] = Attempt(Delivery.REJECTED, f"result file unreadable: {type(exc).__name__}")
        if readable:
            results = sender.send([dataset for _, dataset in readable])
            for (item, _), result in zip(readable, results, strict=True):
                attempts[item.id] = Attempt(result.delivery, result.detail)
        return [attempts[item.id] for item in items]

    return Sender(send, sender.echo)


def dicomweb_sender(destination: DicomWebDestination) -> Sender:
    """Sends result objects to one DICOMweb archive by STOW-RS over a pooled client; its QIDO-RS probe; and the
    client's close."""
    sender = StowSender(destination)

    def send(items: Sequence[OutboxItem]) -> list[Attempt | None]:
        results = sender.send([(item.key, Path(item.payload_path)) for item in items])
        return [Attempt(result.delivery, result.detail) for result in results]

    return Sender(send, sender.probe, sender.close)


def hl7_sender(destination: Hl7Destination) -> Sender:
    """Sends ORU messages to one EHR over one reused MLLP connection; its connection probe; and the
    connection's close."""
    client = MllpClient(destination.host, destination.port, destination.timeout_seconds)

    def send(items: Sequence[OutboxItem]) -> list[Attempt | None]:
        attempts: list[Attempt | None] = []
        for item in items:
            if attempts and attempts[-1] is not None and attempts[-1].delivery is Delivery.RETRY:
                attempts.append(None)  # the EHR did not answer the last one: do not wait out a timeout per item
                continue
            try:
                message = Path(item.payload_path).read_bytes().decode("utf-8")  # keep the \r separators
            except OSError as exc:
                attempts.append(Attempt(Delivery.REJECTED, f"message file unreadable: {type(exc).__name__}"))
                continue
            ack = client.send(message, item.key)
            attempts.append(Attempt(ack.delivery, f"{ack.code} {ack.detail}".strip()))
        return attempts

    return Sender(send, client.reachable, client.close)


class DestinationWorker:
    """Drains one destination's queue on its own thread."""

    def __init__(self, name: str, send: SendBatch, store: Store, metrics: Metrics, policy: DestinationsConfig,
                 seed: int | None = None, probe: Probe | None = None, close: Callable[[], None] | None = None) -> None:
        self.name = name
        self._send, self._probe, self._close = send, probe, close
        self._probed_at = 0.0
        self._store, self._metrics, self._policy = store, metrics, policy
        self._rng = random.Random(seed)  # noqa: S311 - retry jitter, not a secret
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"outbox-{name}", daemon=True)

    def drain_once(self, now: float | None = None) -> int:
        """Send every item that is due now; returns how many were attempted."""
        now = time.time() if now is None else now
        items = self._store.outbox.due(self.name, now)
        if not items:
            return 0
        attempts = self._send(items)
        finished = time.time()
        studies = set()
        for item, attempt in zip(items, attempts, strict=True):
            if attempt is None:
                continue
            made = item.attempts + 1
            delivery = attempt.delivery
            if delivery is Delivery.RETRY and made >= self._policy.max_attempts:
                delivery = Delivery.REJECTED  # retried long enough: a dead letter an operator can revive
            state, next_at = next_state(delivery, made, finished, self._policy.retry_base_seconds,
                                        self._policy.retry_cap_seconds, self._rng)
            self._store.outbox.record_attempt(item.id, state, attempt.detail, finished, next_at)
            self._metrics.outbox_attempts.labels(self.name, attempt.delivery.value).inc()
            if state == DEAD or attempt.delivery is not Delivery.ACCEPTED:
                log.warning("outbox.attempt_failed", destination=self.name, kind=item.kind, item=item.id,
                            study=uid_hash(item.study_uid), attempts=made, state=state, detail=attempt.detail,
                            retry_in=round(next_at - finished, 1) if state != DEAD else None)
            studies.add(item.study_uid)
        for study_uid in studies:
            self._settle(study_uid, finished)
        return len(items)

    def _settle(self, study_uid: str, now: float) -> None:
        settled = self._store.studies.settle(study_uid, now)
        if settled is None:
            return
        if settled.state == COMPLETE:
            self._metrics.stage_seconds.labels("delivery").observe(max(0.0, now - settled.queued_at))
            self._metrics.stage_seconds.labels("end_to_end").observe(max(0.0, now - settled.last_received))
        self._metrics.study_transitions.labels(settled.state).inc()
        log.info("study." + settled.state, study=uid_hash(study_uid))

    def wake(self) -> None:
        """New work is queued: look now rather than at the next poll."""
        self._wake.set()

    def probe_once(self, now: float | None = None) -> int:
        """When items wait for a retry and the last probe is ``probe_seconds`` old: probe the destination;
        if it answers, make its waiting items due now. Returns how many were released."""
        now = time.time() if now is None else now
        if self._probe is None or now - self._probed_at < self._policy.probe_seconds:
            return 0
        if not self._store.outbox.waiting(self.name, now):
            return 0
        self._probed_at = now
        if not self._probe():
            return 0
        released = self._store.outbox.release_destination(self.name, time.time())
        if released:
            log.info("outbox.destination_answers", destination=self.name, released=released)
        return released

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if self.drain_once() or self.probe_once():
                        continue
                except Exception:  # a database hiccup must not kill delivery for good
                    log.exception("outbox.worker_error", destination=self.name)
                self._wake.wait(min(IDLE_POLL_SECONDS, self._policy.probe_seconds))
                self._wake.clear()
        finally:  # the thread that used the connections closes them, once its last batch is done
            self._close_connections()

    def _close_connections(self) -> None:
        if self._close is not None:
            self._close()

    def start(self) -> None:
        """Start draining."""
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in flight (waiting at most ``timeout`` seconds); the destination's connections
        are closed as the thread ends (at once when it never started)."""
        self._stop.set()
        self._wake.set()
        if self._thread.ident is None:
            self._close_connections()
        elif self._thread.is_alive():
            self._thread.join(timeout)


def make_workers(policy: DestinationsConfig, calling_ae: str, store: Store,
                 metrics: Metrics) -> list[DestinationWorker]:
    """One worker per configured destination."""
    senders = [(d.name, dicom_sender(d, calling_ae)) for d in policy.dicom]
    senders += [(d.name, hl7_sender(d)) for d in policy.hl7]
    senders += [(d.name, dicomweb_sender(d)) for d in policy.dicomweb]
    return [DestinationWorker(name, sender.send, store, metrics, policy, probe=sender.probe, close=sender.close)
            for name, sender in senders]
