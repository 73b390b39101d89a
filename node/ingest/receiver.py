"""What the node does with one C-STORE request: check, keep durably, record, answer.

The Success status is returned only after the instance is fsynced in the spool and its
row is committed; the two happen at once (the row goes to the group commit as soon as the file
is written, and the file is synced while it commits). So a crash can leave a committed row whose
file was never made whole, for an instance that was never acknowledged: a resend of it replaces
the row and the file, and at start :func:`forget_torn_instances` drops such rows. Anything refused
is answered with a failure status and an Error Comment, and kept in the quarantine when there is
room to keep it (:mod:`node.ingest.refusals` says what is refused, and with which status).
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from node.ignored import OWN_RESULT, why_not_read
from node.ingest.commits import GroupCommit
from node.ingest.incoming import IncomingDataset, IncomingLimits, stored_transfer_syntax
from node.ingest.part10 import DatasetHeader, MalformedDataset, file_meta, read_header
from node.ingest.refusals import (
    INCOMING_REFUSAL_STATUS,
    INTERNAL_ERROR,
    MALFORMED,
    OUT_OF_RESOURCES,
    REFUSAL_REASONS,
    SUCCESS,
    Refusal,
    check_identity,
    check_same_study,
    check_target_study,
    encodable,
)
from node.ingest.rejection import KEY_OBJECT_SELECTION, Rejections, read_note
from node.ingest.spool import Spool
from node.ops.logging import get_logger, uid_hash
from node.ops.metrics import Metrics
from node.store import InstanceRecord, Store, StoredFile, StudyUpdate

log = get_logger("ingest")

#: After a write failed or was refused for space, readiness says "no room" this long (then looks again).
ROOM_RECHECK_SECONDS = 30.0
#: A refused object's bytes are kept in the quarantine up to this size (beyond it, only the note).
QUARANTINE_BYTES_LIMIT = 64_000_000


@dataclass(frozen=True)
class StoreRequest:
    """One instance as it arrived — a C-STORE request, or a STOW-RS part: command (or File Meta) UIDs, the
    calling AE (or STOW-RS client), the dataset received into a file, and the study a STOW-RS request
    names (None: any)."""

    incoming: IncomingDataset
    sop_class_uid: str
    sop_instance_uid: str
    calling_ae: str
    target_study: str | None = None


@dataclass(frozen=True)
class StoreOutcome:
    """The answer to a C-STORE request and what happened."""

    status: int
    comment: str = ""
    study_uid: str | None = None


def _is_whole(stored: StoredFile) -> bool:
    """Whether a stored instance's file is there at the length it was received with."""
    try:
        return stored.path.stat().st_size == stored.size
    except FileNotFoundError:
        return False


def forget_torn_instances(store: Store) -> int:
    """Drop the rows of receiving studies' instances whose file is missing or short: a crash cut
    the file's write short, so Success never went out and the sender still holds the instance.
    Returns how many were dropped."""
    torn = [stored.sop_instance_uid for stored in store.instances.receiving_files() if not _is_whole(stored)]
    if torn:
        store.instances.forget(torn)
        log.warning("ingest.torn_instances_forgotten", instances=len(torn))
    return len(torn)


class Receiver:
    """Turns received instances (C-STORE requests, STOW-RS parts) into stored instances and answers."""

    def __init__(self, store: Store, spool: Spool, commits: GroupCommit, metrics: Metrics,
                 min_free_bytes: int, ignored_sop_classes: frozenset[str] = frozenset(),
                 max_instance_bytes: int = 1 << 40, max_inflated_bytes: int = 1 << 40,
                 rejections: Rejections | None = None) -> None:
        self._store, self._rejections = store, rejections
        self._limits = IncomingLimits(max_instance_bytes, max_inflated_bytes)
        self._storage_failed_at = -ROOM_RECHECK_SECONDS  # when a write last failed or was refused for space
        self._ignored = ignored_sop_classes
        self._spool = spool
        self._commits = commits
        self._metrics = metrics
        self._min_free_bytes = min_free_bytes
        metrics.start_at_zero(metrics.cstore_failures, REFUSAL_REASONS)

    def open_incoming(self, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                      calling_ae: str) -> IncomingDataset:
        """A C-STORE request's dataset to come, received into a file under the spool's ``tmp/`` (its File Meta
        from the command's UIDs: a dataset that disagrees with them is refused) within the size limits and
        the free-space watermark."""
        meta = file_meta(encodable(sop_class_uid), encodable(sop_instance_uid),
                         stored_transfer_syntax(transfer_syntax_uid), encodable(calling_ae))
        return IncomingDataset(self._spool.temporary_path(), meta, transfer_syntax_uid, self._limits,
                               self._above_watermark)

    def receive(self, request: StoreRequest) -> StoreOutcome:
        """Handle one C-STORE request whose dataset has all arrived; never raises. What of the dataset's
        file is neither stored nor quarantined is removed."""
        started = time.perf_counter()
        self._metrics.cstore_bytes.inc(request.incoming.received_bytes)
        try:
            outcome = self._receive(request)
        except Refusal as refusal:
            outcome = self._refuse(request, refusal)
        except (OSError, sqlite3.Error):  # the disk (file or database) failed us: transient for the sender,
            # who keeps the instance; what was written of it is gone
            log.exception("cstore.storage_error", sop_instance=uid_hash(request.sop_instance_uid))
            self._metrics.cstore_failures.labels("storage_error").inc()
            self._storage_failed_at = time.monotonic()
            outcome = StoreOutcome(OUT_OF_RESOURCES, "storage error; see the node's log")
        except Exception:  # a bug must not take the association down
            log.exception("cstore.internal_error", sop_instance=uid_hash(request.sop_instance_uid))
            self._metrics.cstore_failures.labels("internal_error").inc()
            outcome = StoreOutcome(INTERNAL_ERROR, "internal error; see the node's log")
        finally:
            request.incoming.discard()
        if outcome.status == SUCCESS:
            self._metrics.cstore_seconds.observe(time.perf_counter() - started)
        else:
            self._metrics.cstore_requests.labels("failed").inc()
        return outcome

    def has_room(self) -> bool:
        """Readiness: the spool is above its free-space watermark (the rule each C-STORE's dataset is received
        by), and no write failed or was refused for space less than :data:`ROOM_RECHECK_SECONDS` ago without
        one going through since."""
        if time.monotonic() - self._storage_failed_at < ROOM_RECHECK_SECONDS:
            return False
        return self._above_watermark()

    def _above_watermark(self) -> bool:
        return shutil.disk_usage(self._spool.root).free >= self._min_free_bytes

    def _header(self, incoming: IncomingDataset) -> DatasetHeader:
        """The received dataset checked and its header read, or the reason it was not kept raised."""
        incoming.close()
        if incoming.error is not None:
            raise incoming.error
        if incoming.refusal is not None:
            if incoming.refusal.reason == "out_of_space":
                self._storage_failed_at = time.monotonic()
            raise Refusal(INCOMING_REFUSAL_STATUS[incoming.refusal.reason], incoming.refusal.reason,
                           incoming.refusal.detail)
        with incoming.dataset() as dataset:
            try:
                return read_header(dataset, incoming.transfer_syntax_uid)
            except MalformedDataset as exc:
                raise Refusal(MALFORMED, "malformed", f"malformed dataset: {exc}") from exc

    def _receive(self, request: StoreRequest) -> StoreOutcome:
        header = self._header(request.incoming)
        check_target_study(header, request.target_study)
        check_identity(header, request.sop_class_uid, request.sop_instance_uid)
        if header.sop_class_uid == KEY_OBJECT_SELECTION and self._rejections is not None:
            with request.incoming.dataset() as data:
                note = read_note(data, request.incoming.transfer_syntax_uid)
            if note is not None and self._rejections.reject(note):  # acknowledged and let go, like any KOS
                self._metrics.cstore_requests.labels("rejection_note").inc()
                return StoreOutcome(SUCCESS, study_uid=header.study_uid)
        ignored = why_not_read(header.sop_class_uid, header.manufacturer, self._ignored)
        if ignored is not None:
            return self._own_result(header) if ignored == OWN_RESULT else self._ignored_class(header)
        stored = self._store.instances.stored(header.sop_instance_uid)
        if stored is not None:
            check_same_study(stored, header)
            if _is_whole(stored):
                self._spool.sync(stored.path)  # a twin may still be syncing it: acknowledge it on disk only
                return self._duplicate(header)
            log.warning("cstore.torn_copy_replaced", sop_instance=uid_hash(header.sop_instance_uid))
            self._store.instances.forget([header.sop_instance_uid])
        path = self._spool.keep(request.incoming.received(), header.study_uid, header.sop_instance_uid)
        committed = self._commits.submit(
            InstanceRecord(
                sop_instance_uid=header.sop_instance_uid,
                study_uid=header.study_uid,
                series_uid=header.series_uid,
                sop_class_uid=header.sop_class_uid,
                transfer_syntax_uid=request.incoming.transfer_syntax_uid,
                modality=header.modality,
                path=str(path.relative_to(self._spool.root)),
                size=request.incoming.stored_bytes,
                calling_ae=request.calling_ae,
                received_at=time.time(),
            )
        )
        try:
            self._spool.sync(path)
            update = committed.result()
        except BaseException:
            self._unstore(header.sop_instance_uid, path, committed)
            raise
        if not update.stored:  # a twin on another association was recorded first
            self._drop_if_in_another_study(header, path)
            return self._duplicate(header)
        self._metrics.cstore_requests.labels("stored").inc()
        self._storage_failed_at = -ROOM_RECHECK_SECONDS  # a write went through: there is room again
        if update.new_version:
            self._metrics.study_transitions.labels("receiving").inc()
            log.info("study.receiving", study=uid_hash(header.study_uid), version=update.study_version)
        return StoreOutcome(SUCCESS, study_uid=header.study_uid)

    def _unstore(self, sop_instance_uid: str, path: Path, committed: Future[StudyUpdate]) -> None:
        """The file could not be synced or its row committed: the instance is not acknowledged, so neither
        its row nor its file stays (unless a twin received at the same time owns them)."""
        if committed.exception() is None and committed.result().stored:  # (an exception: no row was made)
            self._store.instances.forget([sop_instance_uid])
        if self._store.instances.stored(sop_instance_uid) is None:
            self._spool.remove([path])

    def _drop_if_in_another_study(self, header: DatasetHeader, written: Path) -> None:
        """Refuse a twin that was recorded first under another study, removing the file just written
        for this one (the refusal keeps the request's bytes in the quarantine)."""
        stored = self._store.instances.stored(header.sop_instance_uid)
        if stored is None:
            return
        try:
            check_same_study(stored, header)
        except Refusal:
            written.unlink(missing_ok=True)
            raise

    def _own_result(self, header: DatasetHeader) -> StoreOutcome:
        """One of the node's own results, sent back (a PACS forwarding the whole study): acknowledged and
        let go — it must neither start a new version of the study nor be read."""
        self._metrics.cstore_requests.labels("own_result").inc()
        log.info("cstore.own_result_ignored", study=uid_hash(header.study_uid), sop_instance=uid_hash(
            header.sop_instance_uid))
        return StoreOutcome(SUCCESS, study_uid=header.study_uid)

    def _ignored_class(self, header: DatasetHeader) -> StoreOutcome:
        """An object of a class the node does not read (``dicom.ignored_sop_classes``): acknowledged, let go."""
        self._metrics.cstore_requests.labels("ignored").inc()
        log.info("cstore.ignored", study=uid_hash(header.study_uid), sop_class=header.sop_class_uid)
        return StoreOutcome(SUCCESS, study_uid=header.study_uid)

    def _duplicate(self, header: DatasetHeader) -> StoreOutcome:
        self._metrics.cstore_requests.labels("duplicate").inc()
        log.info("cstore.duplicate", sop_instance=uid_hash(header.sop_instance_uid))
        return StoreOutcome(SUCCESS, study_uid=header.study_uid)

    def _refuse(self, request: StoreRequest, refusal: Refusal) -> StoreOutcome:
        self._metrics.cstore_failures.labels(refusal.reason).inc()
        kept = None
        if refusal.reason != "out_of_space":  # with the disk full, nothing more is written
            incoming = request.incoming
            keep = incoming.kept and incoming.stored_bytes <= QUARANTINE_BYTES_LIMIT
            details = {"detail": refusal.comment if keep else f"{refusal.comment}; its bytes are not kept",
                       "calling_ae": request.calling_ae}
            try:
                kept = self._spool.quarantine(incoming.received() if keep else incoming.meta, refusal.reason, details)
                self._store.quarantine.record(str(kept), refusal.reason, request.calling_ae)
            except Exception:
                log.exception("quarantine.failed", reason=refusal.reason)
        log.warning(
            "cstore.refused",
            reason=refusal.reason,
            status=f"0x{refusal.status:04X}",
            detail=refusal.comment,
            calling_ae=request.calling_ae,
            sop_instance=uid_hash(request.sop_instance_uid),
            quarantined=str(kept) if kept else None,
        )
        return StoreOutcome(refusal.status, refusal.comment[:64])
