"""The scheduler: stable studies in batches through route → gather (context pool, bounded in time) →
image (imaging pool) → read (an engine thread, up to ``pipeline.batches_in_flight``) → results → queue.

Every step's outcome is a state change in the store, so a crash leaves the study stable and it is read
again (deterministic UIDs make the same objects). A failure is settled by what it says of itself
(:mod:`node.errors`): a data fault fails the study at once; anything else is retried
``pipeline.max_attempts`` times, ``pipeline.retry_seconds`` doubled per try, then failed with its type.
An unreachable engine or a full disk costs no attempt: the studies wait (:class:`EngineHost`, :mod:`node.backoff`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from node.backoff import Pause, out_of_space
from node.config import NodeConfig
from node.context.gather import ContextGatherer
from node.context.gathered import Gathered, gather
from node.egress.queue import hl7_parties, queued_items
from node.engine import GenerationSettings
from node.engine.errors import EngineUnavailable
from node.engine_host import EngineHost
from node.errors import NodeError, is_permanent, reason
from node.imaging.prepared import Prepared, prepare
from node.ops.logging import get_logger, uid_hash
from node.ops.metrics import Metrics
from node.quality.answers import queue_answered
from node.reading import Read, read_batch
from node.results.folder import ResultsFolder
from node.results.hl7 import critical
from node.results.writer import write_results
from node.routing import Router, Skipped, route
from node.store import COMPLETE, FAILED, QUEUED, Postponement, StableStudy, Store

log = get_logger("scheduler")

IDLE_POLL_SECONDS = 0.5

#: What each stage's failure is called in a study's detail (a data fault's own message says it better).
FAILED_IN = {"routing": "cannot route the study", "context": "cannot gather the study's context",
             "imaging": "cannot prepare the study", "engine": "engine failed", "results": "results failed"}


@dataclass(frozen=True)
class StageFailed:
    """A study's stage raised: which stage, and what."""

    stage: str
    error: Exception


def guarded(stage: str, run: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``run`` as one study's step of ``stage``: what an earlier stage settled passes through, and an
    exception is returned as :class:`StageFailed`, not raised (one study's failure must not stop the others)."""
    def step(item: Any) -> Any:
        if isinstance(item, Skipped | StageFailed):
            return item
        try:
            return run(item)
        except Exception as exc:  # settled per study by Scheduler._settled
            return StageFailed(stage, exc)
    return step


class Scheduler:
    """Reads stable studies through the stages and queues their results."""

    def __init__(self, config: NodeConfig, store: Store, metrics: Metrics, host: EngineHost, router: Router,
                 gatherer: ContextGatherer, on_queued: Callable[[], None]) -> None:
        self.config = config
        self._store, self._metrics, self._host, self._on_queued = store, metrics, host, on_queued
        self._router, self._gatherer = router, gatherer
        self.results = ResultsFolder(config.storage.root / "results")
        self._parties = hl7_parties(config.destinations)
        self._settings = GenerationSettings(max_new_tokens=config.engine.max_new_tokens,
                                            temperature=config.engine.temperature)
        self._context_pool = ThreadPoolExecutor(config.context.gather_workers, thread_name_prefix="context")
        self._imaging_pool = ThreadPoolExecutor(config.pipeline.imaging_workers, thread_name_prefix="imaging")
        # Engine batches run on their own threads, up to batches_in_flight at once; a study in one of
        # them is not taken again until its batch has ended.
        self._engine_pool = ThreadPoolExecutor(config.pipeline.batches_in_flight, thread_name_prefix="engine")
        self._slots = threading.BoundedSemaphore(config.pipeline.batches_in_flight)
        self._in_flight: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._paused = Pause("scheduler")  # after a full disk or a database that cannot write
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    # --- taking studies ------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> int:
        """Take one batch of due stable studies and start reading it (when a batch slot is free);
        returns how many studies it took."""
        now = time.time() if now is None else now
        if not self._host.accepting(now) or not self._paused.ready(now) or not self._slots.acquire(blocking=False):
            return 0
        started = False
        try:
            with self._lock:
                busy = set(self._in_flight)
            candidates = self._store.studies.stable(now, self.config.pipeline.batch_size + len(busy))
            due = [s for s in candidates if (s.study_uid, s.version) not in busy][: self.config.pipeline.batch_size]
            to_read = self._prepare_batch(due)
            if to_read:
                with self._lock:
                    self._in_flight.update((s.study_uid, s.version) for s, _ in to_read)
                self._engine_pool.submit(self._read_batch, to_read)
                started = True
            return len(due)
        finally:
            if not started:
                self._slots.release()

    def _prepare_batch(self, due: list[StableStudy]) -> list[tuple[StableStudy, Prepared]]:
        """Route, gather and image the studies; settle those that cannot be read; the rest, prepared."""
        gathered = self._gather_batch(due)
        ready = [(study, g) for study, g in zip(due, gathered, strict=True)
                 if self._settled(study, g) and isinstance(g, Gathered) and not self._waits_for_order(study, g)]
        images = list(self._imaging_pool.map(guarded("imaging", self._image), [g for _, g in ready]))
        to_read = []
        for (study, _), prepared in zip(ready, images, strict=True):
            if self._settled(study, prepared):
                self._metrics.studies_read.labels("with" if prepared.context.given else "without").inc()
                to_read.append((study, prepared))
        return to_read

    def _gather_batch(self, due: list[StableStudy]) -> list[Gathered | Skipped | StageFailed]:
        """Each study routed, then its context gathered on the context pool within ``context.gather_seconds``;
        a study whose gathering outlasts it is read with what the node holds (no PACS)."""
        takes_ecg = self._host.loaded is not None and self._host.loaded.profile.takes_time_series
        routed = [guarded("routing", lambda s: route(s.study_uid, self._store.instances.study_files(s.study_uid),
                                                     self._router))(s) for s in due]
        futures: dict[int, Future] = {
            index: self._context_pool.submit(guarded("context", lambda r: gather(r, self._gatherer, takes_ecg)), r)
            for index, r in enumerate(routed) if not isinstance(r, Skipped | StageFailed)}
        wait(futures.values(), timeout=self.config.context.gather_seconds)
        results: list[Gathered | Skipped | StageFailed] = []
        for index, outcome in enumerate(routed):
            future = futures.get(index)
            if future is None:
                results.append(outcome)
            elif future.done():
                results.append(future.result())
            else:
                self._gatherer.pacs_timed_out(outcome.study_uid)
                results.append(guarded("context", lambda r: gather(r, self._gatherer, takes_ecg, ask_pacs=False))(
                    outcome))
        return results

    def _image(self, gathered: Gathered) -> Prepared | Skipped:
        assert self._host.loaded is not None  # studies are taken only once the engine is loaded
        return prepare(gathered, self._host.loaded.profile, self.config.imaging)

    def _settled(self, study: StableStudy, outcome: object) -> bool:
        """False when ``outcome`` ends the study's read here (skipped, or failed); True to go on."""
        if isinstance(outcome, Skipped):
            self._store.studies.skip(study.study_uid, study.version, outcome.reason, time.time())
            self._metrics.study_transitions.labels("skipped").inc()
            return False
        if isinstance(outcome, StageFailed):
            if not isinstance(outcome.error, NodeError):  # a surprise: where it arose goes to the log
                log.error("study.stage_failed", study=uid_hash(study.study_uid), stage=outcome.stage,
                          exc_info=outcome.error)
            self._fail(study, outcome.stage, outcome.error)
            return False
        return True

    def _waits_for_order(self, study: StableStudy, gathered: Gathered) -> bool:
        """Whether the study is left to wait for its order (its task wants it, none has come, and
        ``context.order_wait_seconds`` since it became stable have not passed)."""
        until = study.stable_at + self.config.context.order_wait_seconds
        context = gathered.context
        if context.order is not None or not context.order_wanted or time.time() >= until:
            return False
        if self._store.studies.postpone(study.study_uid, study.version, until, Postponement.ORDER):
            log.info("study.waiting_for_order", study=uid_hash(study.study_uid), seconds=round(until - time.time()))
        return True

    def context_arrived(self) -> None:
        """An HL7 message was kept: studies waiting for their order look again now."""
        if self._store.studies.release_postponed(Postponement.ORDER, time.time()):
            self._wake.set()

    # --- reading ---------------------------------------------------------------------------------

    def _read_batch(self, batch: list[tuple[StableStudy, Prepared]]) -> None:
        """Read one batch (on an engine thread), queue each study's results, then free the batch's slot."""
        try:
            with self._paused:  # a full disk, a database hiccup: the studies stay stable, taken again after a wait
                self._read(batch)
                self._paused.cleared()
        finally:
            with self._lock:
                self._in_flight.difference_update((s.study_uid, s.version) for s, _ in batch)
            self._slots.release()
            self._wake.set()

    def _read(self, batch: list[tuple[StableStudy, Prepared]]) -> None:
        assert self._host.loaded is not None
        try:
            reads = read_batch([prepared for _, prepared in batch], self._host.loaded.engine, self._settings)
        except EngineUnavailable as exc:  # not the studies' fault: they wait, no attempt is counted
            self._host.unavailable(str(exc))
            return
        except Exception as exc:  # the whole batch failed in the engine: each study retries
            log.exception("engine.batch_failed", studies=len(batch))
            for study, _ in batch:
                self._fail(study, "engine", exc)
            return
        self._host.answered()
        for (study, _), read in zip(batch, reads, strict=True):
            try:
                self._queue(study, read)
            except Exception as exc:
                self._fail(study, "results", exc)  # a full disk raises: the scheduler pauses
                log.exception("results.failed", study=uid_hash(study.study_uid))

    def _queue(self, study: StableStudy, read: Read) -> None:
        """The results stage, then the queue stage, in one transaction with the study's state."""
        result = write_results(read, self.results.study_version(study.study_uid, study.version), self._parties,
                               self.config.results.secondary_capture, study.version,
                               self.results.previous_sr(study.study_uid, study.version),
                               self.config.results.critical_labels, pdf_report=self.config.results.pdf_report)
        if critical(read.findings, self.config.results.critical_labels):
            self._metrics.critical_findings.inc()
        for kind, error in result.omitted:  # its message may quote source attributes: only its type is logged
            self._metrics.result_objects_omitted.labels(kind).inc()
            log.warning("results.object_omitted", study=uid_hash(study.study_uid), version=study.version, kind=kind,
                        error=type(error).__name__)
        now, items = time.time(), queued_items(result, self.config.destinations)
        if not queue_answered(self._store, self._metrics, read, study.version, items, now):
            log.info("study.superseded", study=uid_hash(study.study_uid), version=study.version)
            return
        # with nowhere to deliver, the study is complete at once: that transition is counted too
        self._metrics.study_transitions.labels(QUEUED if items else COMPLETE).inc()
        self._metrics.stage_seconds.labels("read").observe(max(0.0, now - study.stable_at))
        log.info("study.queued", study=uid_hash(study.study_uid), version=study.version,
                 domain=read.prepared.task.domain, boxes=len(read.findings.boxes), objects=len(result.dicom),
                 test_result=read.is_test_result)
        self._on_queued()

    def _fail(self, study: StableStudy, stage: str, exc: Exception) -> None:
        """Record a failed read: settled at once when the data is at fault (the next try would fail the
        same way); otherwise retried after ``retry_seconds`` doubled per earlier try, until the tries are
        used up; then parked as failed. A full disk is the node's fault, not the study's: raised again."""
        if out_of_space(exc):
            raise exc
        permanent = is_permanent(exc)
        why = str(exc) if permanent and isinstance(exc, NodeError) else f"{FAILED_IN[stage]}: {reason(exc)}"
        self._metrics.pipeline_failures.labels(stage).inc()
        state = self._store.studies.fail_attempt(study.study_uid, study.version, why, time.time(),
                                         1 if permanent else self.config.pipeline.max_attempts,
                                         self.config.pipeline.retry_seconds * 2 ** study.attempts)
        # The reason may name files (and so patients): it goes to the store, not to the log.
        log.warning("study.read_failed", study=uid_hash(study.study_uid), stage=stage, state=state,
                    attempts=study.attempts + 1, permanent=permanent, error=type(exc).__name__)
        if state == FAILED:
            self._metrics.study_transitions.labels(FAILED).inc()

    # --- thread ----------------------------------------------------------------------------------

    def wake(self) -> None:
        """A study became stable: look now rather than at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        self._host.load()
        while not self._stop.is_set() and self._host.loaded is not None:
            with self._paused:  # a database hiccup must not stop reading for good
                if self.run_once():
                    continue
            self._wake.wait(IDLE_POLL_SECONDS)
            self._wake.clear()

    def start(self) -> None:
        """Load the model and start reading, in the background."""
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the batches in flight (waiting at most ``timeout`` seconds for them)."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        while self.studies_in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pool in (self._engine_pool, self._imaging_pool, self._context_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    def studies_in_flight(self) -> int:
        """How many studies are being read now."""
        with self._lock:
            return len(self._in_flight)
