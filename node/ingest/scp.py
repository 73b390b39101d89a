"""The DICOM storage SCP (pynetdicom): C-ECHO, C-STORE of every storage SOP class in every
transfer syntax, association policies, DICOM TLS, and one log event per association.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # pynetdicom makes its SOP classes at import
from pynetdicom.transport import ThreadedAssociationServer

from node.config import DicomConfig, TlsConfig
from node.ingest import hygiene, incoming, nodelay, reactor
from node.ingest.assembler import StudyAssembler
from node.ingest.receiver import Receiver, StoreRequest
from node.ingest.refusals import SUCCESS
from node.ops.logging import get_logger
from node.ops.metrics import Metrics

log = get_logger("scp")

@dataclass
class _AssociationStats:
    peer: str
    association: Association | None = None
    opened: float = field(default_factory=time.monotonic)
    calling_ae: str = ""
    established: bool = False
    instances: int = 0
    failures: int = 0
    received_bytes: int = 0
    end: str = "closed"


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server TLS context from the configuration; with ``ca`` set, client certificates are required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    if tls.ca is not None:
        context.load_verify_locations(str(tls.ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class StorageScp:
    """The node's DICOM application entity, listening for associations."""

    def __init__(
        self, config: DicomConfig, receiver: Receiver, assembler: StudyAssembler, metrics: Metrics
    ) -> None:
        self._config = config
        self._receiver = receiver
        self._assembler = assembler
        self._metrics = metrics
        self._associations: dict[int, _AssociationStats] = {}
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self._ae = self._make_ae()

    def _make_ae(self) -> AE:
        # Every storage SOP class is accepted (pynetdicom_patches.configure_process, as the node starts).
        ae = hygiene.application_entity(self._config.ae_title)
        ae.add_supported_context(Verification)
        ae.require_called_aet = True
        ae.require_calling_aet = list(self._config.allowed_calling_ae_titles)
        ae.maximum_associations = self._config.max_associations
        ae.maximum_pdu_size = self._config.max_pdu_bytes
        ae.dimse_timeout = ae.network_timeout = self._config.timeout_seconds
        # how long an acceptor waits for the A-ASSOCIATE-RQ: a silent or closed connection frees its slot then
        ae.acse_timeout = self._config.association_request_seconds
        return ae

    @property
    def port(self) -> int:
        """The port the SCP listens on."""
        assert self._server is not None, "the SCP is not started"
        return self._server.server_address[1]

    @property
    def listening(self) -> bool:
        """Whether the SCP accepts associations."""
        return self._server is not None

    def start(self) -> None:
        """Bind and serve in background threads."""
        handlers: list[evt.EventHandlerType] = [
            (evt.EVT_CONN_OPEN, self._on_connection_open),
            nodelay.HANDLER,
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_end, ["released"]),
            (evt.EVT_ABORTED, self._on_end, ["aborted"]),
            (evt.EVT_CONN_CLOSE, self._on_connection_close),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        tls = tls_context(self._config.tls) if self._config.tls.enabled else None
        try:
            server = self._ae.start_server((self._config.host, self._config.port), block=False,
                                           evt_handlers=handlers)
        except OSError as exc:  # say which of the node's ports it is
            raise OSError(exc.errno, f"DICOM port {self._config.host}:{self._config.port} (dicom.host, dicom.port): "
                                     f"{exc.strerror}") from exc
        assert server is not None  # (start_server gives None only when it blocks)
        self._server = server
        hygiene.cap_pending(server, self._config.max_pending_connections,
                            lambda: self._metrics.associations_rejected.labels("too_many_pending").inc())
        if tls is not None:  # the handshake on each connection's thread, within the association request time
            hygiene.handshake_in_connection_thread(server, tls, self._config.association_request_seconds)
        log.info(
            "scp.listening",
            ae_title=self._config.ae_title,
            host=self._config.host,
            port=self.port,
            tls=tls is not None,
            client_certificates=tls is not None and self._config.tls.ca is not None,
        )

    def stop_accepting(self) -> None:
        """Close the listening socket; open associations go on."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            log.info("scp.stopped_accepting")

    def open_associations(self) -> int:
        """How many associations are open now (connections still negotiating included)."""
        with self._lock:
            return len(self._associations)

    def _established(self) -> int:
        with self._lock:
            return sum(1 for stats in self._associations.values() if stats.established)

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for established associations to finish; abort the rest, and close
        connections still negotiating (nothing of theirs is drained).

        Returns True when all finished on their own.
        """
        deadline = time.monotonic() + timeout
        while self._established() and time.monotonic() < deadline:
            time.sleep(0.05)
        finished = self._established() == 0
        if not finished:
            log.warning("scp.drain_timeout", aborting=self._established())
        hygiene.close_pending()
        self._ae.shutdown()
        with self._lock:
            negotiating = [stats.association for stats in self._associations.values() if not stats.established]
        for association in negotiating:  # their threads may wait out the request time: counted closed now
            if association is not None:
                self._closed(association)
        return finished

    # --- event handlers (run in pynetdicom's association threads) ---

    def _stats(self, association: Association) -> _AssociationStats:
        """The association's record; a detached one if its connection already closed."""
        with self._lock:
            return self._associations.get(id(association)) or _AssociationStats(peer="?")

    def _on_connection_open(self, event: evt.Event) -> None:
        # Runs before the association's threads start: tune them here.
        association = event.assoc
        hygiene.on_connection_open(association, self._config.association_request_seconds,
                                   lambda: self._closed(association))
        hygiene.limit_pdus(association, self._config.max_pdu_bytes,
                           lambda kind, length, limit: self._on_long_pdu(association, kind, length, limit))
        reactor.install(association)
        requestor = association.requestor
        incoming.install(association, lambda sop_class, sop_instance, syntax: self._receiver.open_incoming(
            sop_class, sop_instance, syntax, requestor.ae_title), lambda reason: self._on_invalid(association, reason))
        peer = f"{requestor.address}:{requestor.port}"
        with self._lock:
            self._associations[id(association)] = _AssociationStats(peer=peer, association=association)

    def _on_established(self, event: evt.Event) -> None:
        hygiene.on_established(event.assoc, self._config.timeout_seconds)
        stats = self._stats(event.assoc)
        stats.established = True
        stats.calling_ae = event.assoc.requestor.ae_title
        self._metrics.associations.inc()
        self._metrics.associations_open.inc()
        log.info(
            "association.established",
            calling_ae=stats.calling_ae,
            peer=stats.peer,
            contexts=len(event.assoc.accepted_contexts),
        )

    def _on_rejected(self, event: evt.Event) -> None:
        requestor = event.assoc.requestor
        calling = requestor.ae_title
        called = requestor.primitive.called_ae_title if requestor.primitive else ""
        allowed = self._config.allowed_calling_ae_titles
        if allowed and calling not in allowed:
            reason = "calling_ae_not_allowed"
        elif called.strip() != self._config.ae_title:
            reason = "called_ae_unknown"
        else:
            reason = "too_many_associations"
        self._metrics.associations_rejected.labels(reason).inc()
        log.warning("association.rejected", reason=reason, calling_ae=calling, called_ae=called,
                    peer=self._stats(event.assoc).peer)

    def _on_end(self, event: evt.Event, how: str) -> None:
        self._stats(event.assoc).end = how

    def _on_invalid(self, association: Association, reason: str) -> None:
        """What the peer sent cannot be taken: the association is aborted (the reason names no data)."""
        stats = self._stats(association)
        log.warning("association.protocol_error", calling_ae=stats.calling_ae, peer=stats.peer, reason=reason)

    def _on_long_pdu(self, association: Association, kind: int, length: int, limit: int) -> None:
        """A PDU longer than allowed arrives: the association is aborted before its body is read."""
        stats = self._stats(association)
        log.warning("association.pdu_too_long", calling_ae=stats.calling_ae, peer=stats.peer, pdu_type=kind,
                    length=length, limit=limit)

    def _on_connection_close(self, event: evt.Event) -> None:
        self._closed(event.assoc)

    def _closed(self, association: Association) -> None:
        """The connection is closed (its event, its thread's end or a stop, whichever comes first: once)."""
        with self._lock:
            stats = self._associations.pop(id(association), None)
        if stats is None:
            return
        for unserved in incoming.unserved(association):  # a request cut off, or never served
            unserved.discard()
        self._assembler.association_closed(id(association))
        if not stats.established:
            return
        self._metrics.associations_open.dec()
        log.info(
            "association.closed",
            calling_ae=stats.calling_ae,
            peer=stats.peer,
            end=stats.end,
            instances=stats.instances,
            failures=stats.failures,
            received_bytes=stats.received_bytes,
            seconds=round(time.monotonic() - stats.opened, 3),
        )

    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def _on_store(self, event: evt.Event) -> Dataset:
        request = event.request
        assert isinstance(request, C_STORE)  # (the handler of EVT_C_STORE)
        sop_class, sop_instance = str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID)
        calling_ae = event.assoc.requestor.ae_title
        received = incoming.of_request(request) or self._receiver.open_incoming(  # (none: it came without one)
            sop_class, sop_instance, str(event.context.transfer_syntax), calling_ae)
        outcome = self._receiver.receive(StoreRequest(received, sop_class, sop_instance, calling_ae))
        stats = self._stats(event.assoc)
        stats.received_bytes += received.received_bytes
        if outcome.study_uid is not None:
            self._assembler.carried_by(id(event.assoc), outcome.study_uid)
        if outcome.status == SUCCESS:
            stats.instances += 1
        else:
            stats.failures += 1
        response = Dataset()
        response.Status = outcome.status
        if outcome.comment:  # an LO: one value (no backslash), 64 characters
            response.ErrorComment = outcome.comment.replace("\\", "/")[:64]
        return response
