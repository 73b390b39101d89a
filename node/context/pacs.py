"""Prior studies from the PACS: C-FIND (Study Root, by Patient ID and a date range) and C-GET into a
folder of their own, apart from the studies the PACS sends for reading (a prior is context, never read
on its own). One association per query and per retrieval (``query_association`` holds one for many
queries: the routing survey's); every failure is a :class:`PacsError`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, Association, build_role, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # pynetdicom makes its SOP classes at import
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    GeneralECGWaveformStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    TwelveLeadECGWaveformStorage,
    UltrasoundImageStorage,
    VLPhotographicImageStorage,
)

from node.config import DicomDestination
from node.durable import fsync_dir, write_atomically
from node.errors import TransientError
from node.ingest import nodelay
from node.ingest.pynetdicom_patches import association as association_seam
from node.tls import client_tls_context

#: The storage classes a prior can be retrieved in (the node reads these; others are not asked for).
RETRIEVABLE = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation, CTImageStorage,
               MRImageStorage, UltrasoundImageStorage, DigitalMammographyXRayImageStorageForPresentation,
               SecondaryCaptureImageStorage, VLPhotographicImageStorage, TwelveLeadECGWaveformStorage,
               GeneralECGWaveformStorage)
_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


class PacsError(TransientError):
    """A query or retrieval failed; the message names the step and the status, no patient data."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the DIMSE status that ended it, if any came


@dataclass(frozen=True)
class FoundStudy:
    """One study the PACS holds for the patient."""

    study_uid: str
    modalities: tuple[str, ...]
    study_date: str
    study_time: str
    description: str
    accession: str


class PriorsSource(Protocol):
    """Where priors come from: a PACS by C-FIND/C-GET (:class:`PacsPriors`) or a DICOMweb archive by
    QIDO-RS/WADO-RS (``node/context/dicomweb.py``)."""

    def find(self, patient_id: str, since: date, until: date) -> list[FoundStudy]:
        """The patient's studies dated within [since, until]."""

    def retrieve(self, study_uid: str, directory: Path) -> list[Path]:
        """The study's instances the node reads, written into ``directory`` (one file each, durably); its files."""

    def close(self) -> None:
        """Close the connections kept open (the node is stopping)."""


class PacsPriors:
    """Queries and retrieves one PACS (a ``destinations.dicom`` entry) as the node's AE."""

    def __init__(self, destination: DicomDestination, calling_ae: str) -> None:
        self._destination, self._calling_ae = destination, calling_ae
        tls = destination.tls
        self._tls = client_tls_context(tls) if tls.enabled else None

    def close(self) -> None:
        """Nothing to close: each query and retrieval releases its own association."""

    def _associate(self, ae: AE, handlers: tuple[evt.EventHandlerType, ...] = (), **kwargs: Any) -> Association:
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self._destination.timeout_seconds
        d = self._destination
        assoc = ae.associate(d.host, d.port, ae_title=d.ae_title,
                             tls_args=(self._tls, d.host) if self._tls is not None else None,
                             evt_handlers=[nodelay.HANDLER, *handlers], **kwargs)
        if not assoc.is_established:
            raise PacsError(f"association with {d.name} {'rejected' if assoc.is_rejected else 'failed'}")
        return assoc

    @contextmanager
    def query_association(self) -> Iterator[Association]:
        """An association for C-FIND (Study Root) with the PACS, released on leaving; aborted on Ctrl-C, and
        then a query waiting on it in another thread ends at once (:class:`PacsError`)."""
        ae = AE(ae_title=self._calling_ae)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, _SYNTAXES)
        assoc = self._associate(ae)
        try:
            yield assoc
        except KeyboardInterrupt:  # cancelled: the PACS may be mid-answer, so no release handshake
            assoc.abort()
            association_seam.wake_senders(assoc)
            raise
        finally:
            assoc.release()  # (nothing to release after an abort)

    def find(self, patient_id: str, since: date, until: date) -> list[FoundStudy]:
        """The patient's studies dated within [since, until]."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = patient_id
        query.StudyDate = f"{since:%Y%m%d}-{until:%Y%m%d}"
        for keyword in ("StudyInstanceUID", "ModalitiesInStudy", "StudyTime", "StudyDescription", "AccessionNumber"):
            setattr(query, keyword, "")
        found = []
        with self.query_association() as assoc:
            for identifier in find_matches(assoc, query):
                if not identifier.get("StudyInstanceUID"):
                    continue
                modalities = identifier.get("ModalitiesInStudy", "") or ""
                found.append(FoundStudy(
                    str(identifier.StudyInstanceUID),
                    tuple(str(m) for m in (modalities if isinstance(modalities, list | tuple) else
                                           str(modalities).split("\\")) if m),
                    str(identifier.get("StudyDate", "") or ""), str(identifier.get("StudyTime", "") or ""),
                    str(identifier.get("StudyDescription", "") or ""),
                    str(identifier.get("AccessionNumber", "") or "")))
        return found

    def retrieve(self, study_uid: str, directory: Path) -> list[Path]:
        """C-GET a whole study into ``directory`` (one file per instance, durably); its files."""
        directory.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []

        def store(event: evt.Event) -> int:
            path = directory / f"{len(written):05d}.dcm"
            write_atomically(path, _encoded(event))
            written.append(path)
            return 0x0000

        ae = AE(ae_title=self._calling_ae)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet, _SYNTAXES)
        for sop_class in RETRIEVABLE:
            ae.add_requested_context(sop_class, _SYNTAXES)
        roles = [build_role(sop_class, scp_role=True) for sop_class in RETRIEVABLE]
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        assoc = self._associate(ae, ((evt.EVT_C_STORE, store),), ext_neg=roles)
        try:
            final = None
            for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                final = int(status.Status) if status else None
            if final is None or final not in (0x0000, 0xB000):
                raise PacsError(f"C-GET failed with status {'none' if final is None else f'0x{final:04X}'}")
        finally:
            assoc.release()
        fsync_dir(directory)
        return written


def find_matches(assoc: Association, query: Dataset) -> Iterator[Dataset]:
    """The matches of one C-FIND (Study Root) on an open association; a failure, a timeout or an abort is a
    :class:`PacsError` carrying the status (none for the last two), raised after the matches before it."""
    last = time.monotonic()
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        code = int(status.Status) if status else None
        if code in (0xFF00, 0xFF01):
            if identifier is not None:
                yield identifier
            last = time.monotonic()
        elif code is None:
            timeout = assoc.dimse_timeout
            raise PacsError(f"C-FIND timed out: no answer within {timeout:g} s" if timeout is not None and
                            time.monotonic() - last >= timeout else "C-FIND unanswered: the PACS ended the association")
        elif code != 0x0000:
            raise PacsError(f"C-FIND failed with status 0x{code:04X}", code)


def _encoded(event: evt.Event) -> bytes:
    """The received instance as a Part 10 file (preamble, file meta, the dataset as it was sent)."""
    request = event.request
    assert isinstance(request, C_STORE) and request.DataSet is not None  # (the handler of EVT_C_STORE)
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, event.file_meta, enforce_standard=True)
    buffer.write(request.DataSet.getvalue())
    return buffer.getvalue()
