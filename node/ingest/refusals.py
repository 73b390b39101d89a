"""Which C-STORE requests the node refuses, and the status each refusal answers with: a dataset whose
identity is missing, invalid or disagrees with the command, or a SOP Instance UID reused in another
study. The receiver (:mod:`node.ingest.receiver`) raises :class:`Refusal` and answers with its status."""

from __future__ import annotations

from pydicom.uid import generate_uid

from node.errors import NodeError
from node.ingest.part10 import DatasetHeader
from node.store import StoredFile
from node.uids import is_uid

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_MISMATCH = 0xA900
MALFORMED = 0xC210
BAD_UID = 0xC211
SOP_INSTANCE_MISMATCH = 0xC212
INTERNAL_ERROR = 0xC213
UID_CONFLICT = 0xC214

#: Every reason a C-STORE is refused for (the ``reason`` label of ``qoqnode_cstore_failures_total``).
REFUSAL_REASONS = ("out_of_space", "too_large", "malformed", "missing_uid", "invalid_uid", "sop_class_mismatch",
                   "sop_instance_mismatch", "uid_conflict", "study_mismatch", "storage_error", "internal_error")
#: The status of each refusal an incoming dataset can end in (:class:`~node.ingest.incoming.Refusal`).
INCOMING_REFUSAL_STATUS = {"too_large": OUT_OF_RESOURCES, "out_of_space": OUT_OF_RESOURCES, "malformed": MALFORMED}


class Refusal(NodeError):
    """A C-STORE request refused: the status and Error Comment it is answered with, and the reason counted."""

    def __init__(self, status: int, reason: str, comment: str) -> None:
        assert reason in REFUSAL_REASONS, reason
        super().__init__(comment)
        self.status, self.reason, self.comment = status, reason, comment


def check_same_study(stored: StoredFile, header: DatasetHeader) -> None:
    """Raise :class:`Refusal` when a SOP Instance UID already stored arrives under another study: a sender
    that reuses UIDs, whose second object must be kept aside for a person, not taken for a resend."""
    if stored.study_uid != header.study_uid:
        raise Refusal(UID_CONFLICT, "uid_conflict", "SOP Instance UID is already stored in another study")


def check_target_study(header: DatasetHeader, target_study: str | None) -> None:
    """Raise :class:`Refusal` when a request made for one study (STOW-RS ``/studies/{study}``) carries an
    instance of another: not stored, Failure Reason A900 (PS3.18 I.2.2: the instance does not match its request).
    An instance without a Study Instance UID is left to :func:`check_identity`."""
    if target_study is not None and header.study_uid and header.study_uid != target_study:
        raise Refusal(SOP_CLASS_MISMATCH, "study_mismatch", "Study Instance UID differs from the request's study")


def encodable(value: str) -> str:
    """``value`` as the quarantine's File Meta can hold it (ASCII): a value that is not ASCII (a sender's
    broken UID) stands in as a UID derived from it, so the refused object is still kept."""
    return value if value.isascii() else generate_uid(entropy_srcs=[value])


def check_target_uid(uid: str) -> None:
    """Raise ValueError when the study a request names (STOW-RS ``/studies/{study}``) is not a valid UID."""
    if not is_uid(uid):
        raise ValueError("the study in the request's path is not a valid UID")


def check_identity(header: DatasetHeader, sop_class_uid: str, sop_instance_uid: str) -> None:
    """Raise :class:`Refusal` when the dataset's identity is missing, invalid or disagrees with the command's
    SOP Class and Instance UIDs."""
    for name in ("study_uid", "series_uid", "sop_instance_uid", "sop_class_uid"):
        uid = getattr(header, name)
        if not uid:
            raise Refusal(BAD_UID, "missing_uid", f"dataset has no {name}")
        if not is_uid(uid):
            raise Refusal(BAD_UID, "invalid_uid", f"dataset {name} is not a valid UID")
    if header.sop_class_uid != sop_class_uid:
        raise Refusal(SOP_CLASS_MISMATCH, "sop_class_mismatch", "SOP Class UID differs from command")
    if header.sop_instance_uid != sop_instance_uid:
        raise Refusal(SOP_INSTANCE_MISMATCH, "sop_instance_mismatch", "SOP Instance UID differs from command")
