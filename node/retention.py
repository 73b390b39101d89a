"""Retention: what the node received and made is deleted once a study is finished and old enough.

The node is not an archive — the PACS is. ``storage.retention_days`` after a study became complete
(or was skipped), its instance files, its results and its rows go; quarantined objects go the same
time after they arrived. Failed and undelivered studies stay until an operator acts on them. A
study that receives a new instance while it is being purged is kept (the store checks, under the
lock that recording an instance takes, that it is still finished and expired); if the instance
arrives just after, it starts the study afresh. The clinical context goes by the same period: HL7
messages (with their orders and lab results) that long after they arrived, priors retrieved from the
PACS that long after they last went with a study. Runs every ``PURGE_INTERVAL_SECONDS`` in its own thread.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from node.ingest.spool import Spool
from node.ops.logging import get_logger, uid_hash
from node.ops.metrics import Metrics
from node.store import Store

log = get_logger("retention")

PURGE_INTERVAL_SECONDS = 600.0
SECONDS_PER_DAY = 86_400.0


class Retention:
    """Deletes finished studies and quarantined objects older than the retention period."""

    def __init__(self, store: Store, spool: Spool, results_root: Path, metrics: Metrics, retention_days: float) -> None:
        self._store, self._spool, self._results_root, self._metrics = store, spool, results_root, metrics
        self._retention_seconds = retention_days * SECONDS_PER_DAY
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def run_once(self, now: float | None = None) -> int:
        """Purge what has expired by ``now``; returns how many studies went."""
        if self._retention_seconds <= 0:
            return 0
        before = (time.time() if now is None else now) - self._retention_seconds
        purged = 0
        while not self._stop.is_set() and (expired := self._store.retention.expired_studies(before)):
            for study_uid in expired:
                purged += self._purge(study_uid, before)
            if len(expired) < 100:
                break
        for item_id, path in self._store.quarantine.expired(before):
            for kept in (path, path.with_suffix(".json")):
                kept.unlink(missing_ok=True)
            self._store.quarantine.forget(item_id)
            self._metrics.retention_purged.labels("quarantine").inc()
        self._purge_context(before)
        return purged

    def _purge_context(self, before: float) -> None:
        """Delete the HL7 messages and retrieved priors the store let go of."""
        messages, priors = self._store.clinical.forget_before(before)
        for path in messages:
            path.unlink(missing_ok=True)
        for folder in priors:
            shutil.rmtree(folder, ignore_errors=True)
        self._metrics.retention_purged.labels("hl7_message").inc(len(messages))
        self._metrics.retention_purged.labels("prior").inc(len(priors))
        if messages or priors:
            log.info("context.purged", hl7_messages=len(messages), priors=len(priors))

    def _purge(self, study_uid: str, before: float) -> int:
        freed = 0

        def remove(paths: list[Path]) -> None:
            nonlocal freed
            freed = self._spool.remove(paths)
            shutil.rmtree(self._results_root / study_uid, ignore_errors=True)

        files = self._store.retention.purge_study(study_uid, before, remove)
        if files is None:
            return 0
        self._metrics.retention_purged.labels("study").inc()
        log.info("study.purged", study=uid_hash(study_uid), instances=files, freed_bytes=freed)
        return 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a disk or database hiccup: try again at the next round
                log.exception("retention.error")
            self._stop.wait(PURGE_INTERVAL_SECONDS)

    def start(self) -> None:
        """Purge now and then every ``PURGE_INTERVAL_SECONDS``, in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the study being purged."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
