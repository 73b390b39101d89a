"""IHE IOCM rejection notes: a Key Object Selection whose document title (Concept Name Code Sequence) is a
rejection code and that references the node's own results.

The result of each study version it references (an SR, SEG, PR, SC or PDF the node made and queued) is
marked rejected with the code in the verdict store (source ``iocm``), counted
(``qoqnode_results_rejected_total{reason}``), and its outbox items not yet delivered are cancelled: they are
never sent, nor retried. The note itself is acknowledged and let go, like every KOS: it is never stored and
never starts a new version of its study. A KOS of another title, or one that references nothing of the
node's, is ignored as before (:mod:`node.ignored`).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ImplicitVRLittleEndian

from node.ops.logging import get_logger, uid_hash
from node.ops.metrics import Metrics
from node.store import Store
from node.store.verdicts import Judgement, Source, Verdict

log = get_logger("ingest")

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
#: DCM codes of rejection notes (PS3.16 CID 7011): quality, patient safety, incorrect modality worklist entry,
#: data retention policy expired.
REJECTION_CODES = {"113001": "Rejected for Quality Reasons", "113037": "Rejected for Patient Safety Reasons",
                   "113038": "Incorrect Modality Worklist Entry", "113039": "Data Retention Policy Expired"}


@dataclass(frozen=True)
class RejectionNote:
    """A rejection note's code, its own SOP Instance UID and the SOP Instance UIDs it references."""

    sop_instance_uid: str
    code: str
    referenced: tuple[str, ...]


def read_note(data: bytes | memoryview, transfer_syntax_uid: str) -> RejectionNote | None:
    """The rejection note a KOS dataset (without File Meta) is; None when its title is not a rejection code
    (or it cannot be read: it is then ignored as every KOS is)."""
    syntax = UID(transfer_syntax_uid)
    try:
        ds = read_dataset(io.BytesIO(bytes(data)), syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian)
    except (InvalidDicomError, ValueError, EOFError, OSError, NotImplementedError):
        return None
    try:
        title = ds.ConceptNameCodeSequence[0]
        code, scheme = str(title.CodeValue), str(title.CodingSchemeDesignator)
        referenced = tuple(str(instance.ReferencedSOPInstanceUID)
                           for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
                           for series in study.get("ReferencedSeriesSequence", [])
                           for instance in series.get("ReferencedSOPSequence", []))
        uid = str(ds.SOPInstanceUID)
    except Exception:  # a KOS that cannot be read as a note (pydicom raises many kinds) is ignored, as before
        return None
    if scheme != "DCM" or code not in REJECTION_CODES:
        return None
    return RejectionNote(uid, code, referenced)


class Rejections:
    """Marks the node's results a rejection note references as rejected."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store, self._metrics = store, metrics
        metrics.start_at_zero(metrics.results_rejected, REJECTION_CODES)

    def reject(self, note: RejectionNote, received_at: float | None = None) -> int:
        """Reject the study versions whose results the note references; how many (0: none is the node's). Each
        version's verdict is recorded and its undelivered items cancelled in one transaction (both, or
        neither: no item is sent after its result is marked rejected)."""
        received_at = received_at if received_at is not None else time.time()
        results = self._store.outbox.results_of(list(note.referenced)) if note.referenced else {}
        for ref in sorted(set(results.values()), key=lambda ref: ref.folder):
            answer = self._store.answers.for_study(ref.study_uid, ref.version)
            now = time.time()
            cancelled = self._store.verdicts.record(Verdict(
                study_instance_uid=ref.study_uid, version=ref.version, task=answer.task if answer else "",
                source=Source.IOCM, source_key=note.sop_instance_uid, verdict=Judgement.REJECT,
                received_at=received_at, ai_labels=answer.labels if answer else (), reason_code=note.code),
                cancel_results=ref.folder, now=now)
            self._store.studies.settle(ref.study_uid, now)
            self._metrics.results_rejected.labels(note.code).inc()
            log.warning("results.rejected", study=uid_hash(ref.study_uid), version=ref.version, reason=note.code,
                        cancelled=cancelled)
        return len(set(results.values()))
