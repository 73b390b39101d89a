"""C-STORE SCU: send result objects to a PACS and say, per object, what the PACS answered.

Statuses are classified for the outbox: Success (0000) and the Warning statuses (0001, Bxxx)
are delivered; Refused: out of resources (A7xx) and association or network failures are
retried later; Error: data set does not match SOP class (A9xx) and cannot understand (Cxxx),
and any other failure, are permanent: the object goes to the dead letters, never silently.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, Association, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # pynetdicom makes its SOP classes at import

from node.config import ClientTlsConfig
from node.egress.mllp import Delivery
from node.ingest import nodelay
from node.tls import client_tls_context


@dataclass(frozen=True)
class StoreResult:
    """What the PACS answered for one object."""

    sop_instance_uid: str
    delivery: Delivery
    status: int | None  # None: no answer (association or network failure)
    detail: str


def classify_status(status: int) -> tuple[Delivery, str]:
    """The outbox's reading of a C-STORE response status (PS3.4 Table B.2-1)."""
    if status == 0x0000:
        return Delivery.ACCEPTED, "stored"
    if status == 0x0001 or 0xB000 <= status <= 0xBFFF:
        return Delivery.ACCEPTED, f"stored with warning 0x{status:04X}"
    if 0xA700 <= status <= 0xA7FF:
        return Delivery.RETRY, f"refused: out of resources (0x{status:04X})"
    return Delivery.REJECTED, f"failed with status 0x{status:04X}"


def _not_established(assoc: Association, connected: bool) -> str:
    """Why an association did not come about: no connection at all (refused, unreachable, timed out: pynetdicom
    calls that an abort too), or the PACS rejected or aborted it."""
    if not connected:
        return "no connection to the PACS (refused or unreachable)"
    return "association rejected" if assoc.is_rejected else "association aborted" if assoc.is_aborted \
        else "association failed"


class DicomSender:
    """Sends datasets to one PACS (called AE, host, port), one association per batch."""

    def __init__(self, calling_ae: str, called_ae: str, host: str, port: int, timeout_seconds: float = 30.0,
                 tls: ClientTlsConfig | None = None) -> None:
        self.calling_ae, self.called_ae, self.host, self.port = calling_ae, called_ae, host, port
        self.timeout = timeout_seconds
        self._tls = client_tls_context(tls) if tls is not None and tls.enabled else None

    def echo(self) -> bool:
        """Whether the PACS answers a C-ECHO now (a cheap probe of a destination that was down)."""
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.add_requested_context(Verification)
        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.called_ae,
                                 tls_args=(self._tls, self.host) if self._tls is not None else None,
                                 evt_handlers=[nodelay.HANDLER])
        except (OSError, RuntimeError, ValueError):
            return False
        if not assoc.is_established:
            return False
        try:
            status = assoc.send_c_echo()
            return bool(status) and int(status.Status) == 0x0000
        finally:
            assoc.release()

    def send(self, datasets: Sequence[Dataset]) -> list[StoreResult]:
        """C-STORE every dataset (negotiating their SOP classes); a result for each, never raises."""
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        # Each object goes in the syntax it was made in (highdicom sets it); little endian as fallbacks.
        syntaxes = sorted({str(ds.file_meta.TransferSyntaxUID) for ds in datasets}
                          | {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)})
        for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
            ae.add_requested_context(sop_class, syntaxes)
        tls_args = (self._tls, self.host) if self._tls is not None else None
        connected = threading.Event()
        assoc = ae.associate(self.host, self.port, ae_title=self.called_ae, tls_args=tls_args,
                             evt_handlers=[nodelay.HANDLER, (evt.EVT_CONN_OPEN, lambda _: connected.set())])
        if not assoc.is_established:
            reason = _not_established(assoc, connected.is_set())
            return [StoreResult(str(ds.SOPInstanceUID), Delivery.RETRY, None, reason) for ds in datasets]
        results = []
        try:
            for ds in datasets:
                uid = str(ds.SOPInstanceUID)
                try:
                    response = assoc.send_c_store(ds)
                except (RuntimeError, ValueError, OSError) as exc:
                    results.append(StoreResult(uid, Delivery.RETRY, None, f"not sent: {type(exc).__name__}"))
                    continue
                if "Status" not in response:  # no response: timeout, abort or a broken connection
                    results.append(StoreResult(uid, Delivery.RETRY, None, "no response from the PACS"))
                    continue
                delivery, detail = classify_status(int(response.Status))
                results.append(StoreResult(uid, delivery, int(response.Status), detail))
        finally:
            if assoc.is_established:
                assoc.release()
        return results
