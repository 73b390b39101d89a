"""One STOW-RS part: a DICOM Part 10 file, received as it streams in and stored through the C-STORE path.

The part's File Meta is read from its first bytes (at most :data:`HEAD_LIMIT`); it names the instance's
SOP Class, SOP Instance and transfer syntax as a C-STORE command does, so the dataset after it goes into the
receiver's :class:`~node.ingest.incoming.IncomingDataset` (the same size limits, spill to ``tmp/``, inflation
of deflated data) and is then stored (:meth:`~node.ingest.receiver.Receiver.receive`: checks, quarantine,
ignored classes, fsync and commit) like a C-STORE's."""

from __future__ import annotations

from dataclasses import dataclass

from node.dicomweb.multipart import DICOM, media_type
from node.dicomweb.response_module import CANNOT_UNDERSTAND
from node.ingest.incoming import IncomingDataset
from node.ingest.part10 import FileMeta, MalformedDataset, read_file_meta
from node.ingest.receiver import Receiver, StoreRequest
from node.ingest.refusals import SUCCESS, encodable
from node.ops.logging import get_logger

log = get_logger("stow")

#: A part's File Meta must end within its first this many bytes.
HEAD_LIMIT = 65_536

@dataclass(frozen=True)
class PartResult:
    """What became of one part: its instance's UIDs (empty where it had none), and the status — 0 stored,
    else the failure reason — with a reason in words (no patient data)."""

    number: int
    sop_class_uid: str
    sop_instance_uid: str
    status: int
    reason: str = ""
    study_uid: str | None = None

    @property
    def stored(self) -> bool:
        """Whether the instance is stored (or acknowledged and let go, as C-STORE does)."""
        return self.status == SUCCESS

    @property
    def understood(self) -> bool:
        """Whether the part was a DICOM file at all (not: answered Cannot understand before any UID was read)."""
        return bool(self.sop_instance_uid)


class PartReceiver:
    """The sink of one part (:class:`~node.dicomweb.multipart.PartSink`): the File Meta, then the dataset into an
    :class:`IncomingDataset`; :meth:`store` (blocking: run it off the event loop) stores it once it has ended."""

    def __init__(self, number: int, headers: dict[str, str], receiver: Receiver, client: str,
                 target_study: str | None) -> None:
        self.number = number
        self._receiver = receiver
        self._client = client
        self._target_study = target_study
        self._head: bytearray | None = bytearray()
        self._meta: FileMeta | None = None
        self._incoming: IncomingDataset | None = None
        self.failure: str | None = None
        self.ended = False
        kind = media_type(headers.get("content-type", DICOM))[0]
        if kind != DICOM:
            self._fail(f"part {number} is {kind[:64]!r}, not {DICOM}")

    def _fail(self, reason: str) -> None:
        self.failure, self._head = reason, None
        self.abandon()

    def data(self, chunk: bytes) -> None:
        """Take the part's next bytes: into the head until the File Meta is read, then into the dataset."""
        if self._incoming is not None:
            self._incoming.write(chunk)
        elif self._head is not None:
            self._head += chunk
            self._open(complete=False)

    def _open(self, complete: bool) -> None:
        assert self._head is not None
        try:
            meta = read_file_meta(self._head, complete)
        except MalformedDataset as exc:
            self._fail(f"part {self.number}: {exc}")
            return
        if meta is None:
            if len(self._head) > HEAD_LIMIT:
                self._fail(f"part {self.number}: File Meta longer than {HEAD_LIMIT} bytes")
            return
        self._meta = meta
        self._incoming = self._receiver.open_incoming(meta.sop_class_uid, meta.sop_instance_uid,
                                                      encodable(meta.transfer_syntax_uid), self._client)
        rest, self._head = self._head[meta.dataset_offset:], None
        if rest:
            self._incoming.write(bytes(rest))

    def end(self) -> None:
        """The part's closing boundary arrived."""
        self.ended = True
        if self._head is not None:
            self._open(complete=True)

    def abandon(self) -> None:
        """Let go of what is kept of the part (the body broke off in it, or it is refused already)."""
        if self._incoming is not None:
            self._incoming.discard()
            self._incoming = None

    def store(self) -> PartResult:
        """Store the ended part through the receiver (checks, fsync, commit, or the quarantine); never raises."""
        if self._meta is None or self._incoming is None:
            reason = self.failure or f"part {self.number} is empty"
            log.warning("stow.part_refused", part=self.number, reason=reason, client=self._client)
            return PartResult(self.number, "", "", CANNOT_UNDERSTAND, reason)
        meta = self._meta
        outcome = self._receiver.receive(StoreRequest(self._incoming, meta.sop_class_uid, meta.sop_instance_uid,
                                                      self._client, self._target_study))
        return PartResult(self.number, meta.sop_class_uid, meta.sop_instance_uid, outcome.status, outcome.comment,
                          outcome.study_uid)
