"""Group commit of received instances: the rows of instances that arrive together, on one
association or many, are committed in one transaction, so one fsync of the state database serves
them all, and on a thread of its own, so the receiver syncs the instance's file meanwhile.

A receiver submits a row as soon as the file is written, syncs the file, then waits for the
row's commit: the Success status still goes out only once both are on disk.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from node.ops.logging import get_logger
from node.store import InstanceRecord, Store, StudyUpdate

log = get_logger("ingest")

#: The most rows one transaction takes; more wait for the next (a bound on one commit's latency).
MAX_BATCH = 64

_STOP = object()


class GroupCommit:
    """Commits instance rows in batches on its own thread; :meth:`submit` returns a future."""

    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._accepting = True
        self._accepting_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, record: InstanceRecord) -> Future[StudyUpdate]:
        """Queue a row for the next commit; the future gives its study update, or raises what the
        commit raised."""
        future: Future[StudyUpdate] = Future()
        with self._accepting_lock:
            if not self._accepting:
                raise RuntimeError("the group commit has stopped")
            self._pending.put((record, future))
        return future

    def stop(self) -> None:
        """Commit what was submitted, then end the thread; later submissions raise."""
        with self._accepting_lock:
            if not self._accepting:
                return
            self._accepting = False
            self._pending.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._pending.get()]
            while len(batch) < self._max_batch and not self._pending.empty():
                batch.append(self._pending.get())
            stopping = _STOP in batch
            self._commit([item for item in batch if item is not _STOP])
            if stopping:
                return

    def _commit(self, batch: list[tuple[InstanceRecord, Future[StudyUpdate]]]) -> None:
        if not batch:
            return
        try:
            updates = self._store.instances.record([record for record, _ in batch])
        except Exception as exc:  # every waiting receiver answers with its own failure status
            log.exception("ingest.commit_failed", rows=len(batch))
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), update in zip(batch, updates, strict=True):
            future.set_result(update)
