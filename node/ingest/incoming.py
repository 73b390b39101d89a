"""A C-STORE request's dataset, kept as its P-DATA fragments arrive: a large one goes to disk, never whole
into memory.

pynetdicom assembles a C-STORE's dataset in memory before the handler sees it (a 655 MB instance took
2.7 GB of the node's memory, and a size limit could only be checked once all of it was there). On the
storage SCP's associations the DIMSE layer hands each data fragment to an :class:`IncomingDataset`
instead: it keeps the fragment — in memory up to :data:`SPILL_BYTES` (then the dataset is stored with one
write, as before), beyond that in a file under ``storage.root/tmp/`` (a Part 10 file, the node's File Meta
first) — counts it, and once the dataset passes ``dicom.max_instance_bytes``, the spool's free-space
watermark or a disk error, lets go of what it kept and only counts the rest, while the association goes on
reading it (so the sender gets its answer, an A700 refusal, not a broken connection). A dataset in a deflated
transfer syntax is inflated as it arrives, never to more than ``dicom.max_inflated_bytes``, and kept inflated
in the undeflated twin of its transfer syntax: the same dataset, which no later read has to inflate again.

The receiver then reads the dataset where it is (a file through a memory map), stores it in the spool or the
quarantine — a file by renaming it — and lets go of what is left (:meth:`IncomingDataset.discard`). The hook
(:func:`install`) is the one pynetdicom's own chunked reception writes through: the seam
:mod:`node.ingest.pynetdicom_patches.dimse`.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE

from node.durable import write_all
from node.ingest.pynetdicom_patches import dimse

#: Each deflated transfer syntax (PS3.5 Annex A.5, PS3.5 A.6) and its undeflated twin: the dataset is kept
#: inflated, in the twin, so that it is inflated once, as it arrives.
INFLATED_TWIN = {
    "1.2.840.10008.1.2.1.99": "1.2.840.10008.1.2.1",  # Deflated Explicit VR LE -> Explicit VR LE
    "1.2.840.10008.1.2.4.95": "1.2.840.10008.1.2.4.94",  # JPIP Referenced Deflate -> JPIP Referenced
    "1.2.840.10008.1.2.4.205": "1.2.840.10008.1.2.4.204",  # JPIP HTJ2K Referenced Deflate -> ... Referenced
}
#: Output of one inflate step: a deflate bomb is counted (and stopped) in steps of this size.
INFLATE_STEP_BYTES = 1 << 20
#: The free-space watermark is looked at again each time this much more has been written.
ROOM_CHECK_BYTES = 16 << 20
#: A dataset is held in memory up to this size (one write where it is stored, as a typical CT or MR slice is),
#: beyond it in a file: at most this much memory per association.
SPILL_BYTES = 4 << 20


def stored_transfer_syntax(transfer_syntax_uid: str) -> str:
    """The transfer syntax a dataset received in ``transfer_syntax_uid`` is kept in."""
    return INFLATED_TWIN.get(transfer_syntax_uid, transfer_syntax_uid)


@dataclass(frozen=True)
class Refusal:
    """Why an incoming dataset was not kept: a :data:`~node.ingest.receiver.REFUSAL_REASONS` reason and a
    detail without patient data."""

    reason: str
    detail: str


@dataclass(frozen=True)
class IncomingLimits:
    """What one incoming dataset may take: encoded (as received) and, deflated, inflated."""

    max_encoded_bytes: int
    max_inflated_bytes: int


class IncomingDataset:
    """One C-STORE request's dataset, kept as it arrives (see the module's text): in memory up to
    :data:`SPILL_BYTES`, beyond that in a file under ``tmp/``.

    pynetdicom's DIMSE message writes each data fragment with :meth:`write` and flushes ``file``, and after the
    handler closes it and unlinks ``name`` (the same protocol as its own chunked reception).
    """

    def __init__(self, path: Path, meta: bytes, transfer_syntax_uid: str, limits: IncomingLimits,
                 has_room: Callable[[], bool]) -> None:
        self.path = path
        self.name = str(path)
        self.file = self
        self.meta = meta
        self.received_syntax = transfer_syntax_uid
        self.transfer_syntax_uid = stored_transfer_syntax(transfer_syntax_uid)
        self.received_bytes = 0
        self.refusal: Refusal | None = None
        self.error: OSError | None = None
        self._limits = limits
        self._has_room = has_room
        self._next_room_check = ROOM_CHECK_BYTES
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS) if transfer_syntax_uid in INFLATED_TWIN else None
        self._buffer: bytearray | None = bytearray(meta)  # None once spilled to the file, or let go
        self.stored_bytes = len(meta)  # the Part 10 file's length: File Meta and dataset (inflated)
        self._fd: int | None = None
        self._closed = False
        if not has_room():
            self._refuse(Refusal("out_of_space", "storage below its free-space watermark"))

    @property
    def kept(self) -> bool:
        """Whether the whole dataset is kept (nothing refused, no disk error)."""
        return self.refusal is None and self.error is None

    @property
    def spilled(self) -> bool:
        """Whether the dataset is in the file at :attr:`path` (past :data:`SPILL_BYTES`) rather than in memory."""
        return self._buffer is None and self.kept

    def write(self, fragment: bytes) -> None:
        """Take the next data fragment (pynetdicom's DUL thread); never raises."""
        self.received_bytes += len(fragment)
        if not self.kept:
            return
        if self.received_bytes > self._limits.max_encoded_bytes:
            self._refuse(Refusal("too_large", f"dataset over {self._limits.max_encoded_bytes} bytes "
                                              "(dicom.max_instance_bytes)"))
            return
        try:
            if self._inflater is None:
                self._store(fragment)
            else:
                self._inflate(fragment)
        except OSError as exc:
            self._fail(exc)

    def flush(self) -> None:
        """Nothing to flush: each fragment is kept as it comes."""

    def close(self) -> None:
        """The last fragment is in: close the file; a deflated dataset must have ended. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._inflater is not None and self.kept and not self._inflater.eof:
            self._refuse(Refusal("malformed", "deflated dataset is truncated"))

    def discard(self) -> None:
        """Close and let go of what is kept: the memory, and the file if it is still there (it was neither
        stored nor quarantined)."""
        self.close()
        self._let_go()

    def received(self) -> Path | bytearray:
        """The Part 10 file kept (File Meta and dataset): its path once :attr:`spilled`, else its bytes."""
        assert self.kept, "nothing is kept"
        return self.path if self._buffer is None else self._buffer

    @contextmanager
    def dataset(self) -> Iterator[memoryview]:
        """The dataset kept (after the File Meta), in memory or memory-mapped read-only: no copy is made."""
        with ExitStack() as stack:
            source: bytearray | mmap.mmap | None = self._buffer
            if source is None:
                file = stack.enter_context(open(self.path, "rb"))
                source = stack.enter_context(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
            view = memoryview(source)[len(self.meta):]
            try:
                yield view
            finally:
                view.release()

    def _store(self, data: bytes) -> None:
        if self._buffer is not None:
            self._buffer += data
            if len(self._buffer) > SPILL_BYTES:  # too large for memory: to the file, and on from there
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                write_all(self._fd, self._buffer)
                self._buffer = None
        else:
            assert self._fd is not None
            write_all(self._fd, data)
        self.stored_bytes += len(data)
        if self.stored_bytes >= self._next_room_check:
            self._next_room_check = self.stored_bytes + ROOM_CHECK_BYTES
            if not self._has_room():
                self._refuse(Refusal("out_of_space", "storage below its free-space watermark"))

    def _inflate(self, fragment: bytes) -> None:
        assert self._inflater is not None
        data = fragment
        while self.kept:
            try:
                out = self._inflater.decompress(data, INFLATE_STEP_BYTES)
            except zlib.error as exc:
                self._refuse(Refusal("malformed", f"deflated dataset does not inflate: {exc}"))
                return
            if self.stored_bytes - len(self.meta) + len(out) > self._limits.max_inflated_bytes:
                limit = self._limits.max_inflated_bytes
                self._refuse(Refusal("too_large", f"deflated dataset inflates to more than {limit} bytes "
                                                  "(dicom.max_inflated_bytes)"))
                return
            self._store(out)
            data = self._inflater.unconsumed_tail
            if not data and len(out) < INFLATE_STEP_BYTES:
                return

    def _refuse(self, refusal: Refusal) -> None:
        """Stop keeping the dataset: what was kept goes; the rest is only counted."""
        self.refusal = refusal
        self._let_go()

    def _fail(self, error: OSError) -> None:
        """The disk failed us: what was kept goes; the receiver answers A700."""
        self.error = error
        with suppress(OSError):
            self._let_go()

    def _let_go(self) -> None:
        """Drop what is kept so far (the request may still be arriving: later fragments are only counted)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        self._buffer = None
        self.path.unlink(missing_ok=True)


#: Opens the :class:`IncomingDataset` of a C-STORE request: (SOP Class UID, SOP Instance UID, transfer syntax).
Opener = Callable[[str, str, str], IncomingDataset]


def install(association: Association, open_dataset: Opener, on_invalid: dimse.OnInvalid) -> None:
    """Make ``association`` (an acceptor, before it starts) hand each C-STORE request's data fragments to an
    :class:`IncomingDataset` from ``open_dataset`` instead of assembling them in memory; P-DATA it cannot take
    (an unaccepted context, a message that does not decode) aborts it, telling ``on_invalid`` why."""
    dimse.hand_fragments(association, open_dataset, on_invalid)


def of_request(request: C_STORE) -> IncomingDataset | None:
    """The :class:`IncomingDataset` that holds a C-STORE request's dataset (None: it came without one)."""
    incoming = dimse.file_of(request)
    return incoming if isinstance(incoming, IncomingDataset) else None


def unserved(association: Association) -> list[IncomingDataset]:
    """The datasets of ``association`` that no handler will take: the request still arriving, and those
    received but not served when the association ended."""
    return [incoming for incoming in dimse.pending_files(association) if isinstance(incoming, IncomingDataset)]
