"""Study assembly: a study becomes *stable* when no open association is carrying it and no
instance has arrived for ``study.stable_seconds``.

The timer runs on the ``last_received`` time kept in the state database, so after a
restart studies that were arriving continue their timers where they stood.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable

from node.ops.logging import get_logger, uid_hash
from node.ops.metrics import Metrics
from node.store import Store

log = get_logger("assembler")


class StudyAssembler:
    """Tracks which associations carry which studies and marks studies stable."""

    def __init__(self, store: Store, metrics: Metrics, stable_seconds: float,
                 on_stable: Callable[[], None] | None = None) -> None:
        self._store = store
        self._on_stable = on_stable
        self._metrics = metrics
        self._stable_seconds = stable_seconds
        self._carried: dict[str, set[int]] = defaultdict(set)  # study UID -> association ids
        self._by_association: dict[int, set[str]] = defaultdict(set)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="assembler", daemon=True)

    def carried_by(self, association_id: int, study_uid: str) -> None:
        """Note that an open association has delivered an instance of ``study_uid``."""
        with self._lock:
            self._carried[study_uid].add(association_id)
            self._by_association[association_id].add(study_uid)

    def association_closed(self, association_id: int) -> None:
        """Forget a closed association; its studies' timers now decide alone."""
        with self._lock:
            for study_uid in self._by_association.pop(association_id, ()):
                carriers = self._carried[study_uid]
                carriers.discard(association_id)
                if not carriers:
                    del self._carried[study_uid]

    def _is_carried(self, study_uid: str) -> bool:
        with self._lock:
            return study_uid in self._carried

    def sweep(self, now: float | None = None) -> list[str]:
        """Mark every study that is due stable; returns their UIDs."""
        now = time.time() if now is None else now
        stabilised = []
        for study_uid, version, last_received in self._store.studies.receiving():
            if now - last_received < self._stable_seconds or self._is_carried(study_uid):
                continue
            if self._store.studies.mark_stable(study_uid, last_received, now):
                stabilised.append(study_uid)
                self._metrics.study_transitions.labels("stable").inc()
                log.info(
                    "study.stable",
                    study=uid_hash(study_uid),
                    version=version,
                    quiet_seconds=round(now - last_received, 3),
                )
        if stabilised and self._on_stable is not None:
            self._on_stable()
        return stabilised

    def _run(self) -> None:
        interval = min(1.0, self._stable_seconds / 4)
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception:  # keep the timer alive through a transient database error
                log.exception("assembler.sweep_failed")

    def start(self) -> None:
        """Start the background timer (it also resumes timers left by a previous run)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the background timer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
