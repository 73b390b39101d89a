"""The pipeline: stable study → route → imaging → engine → findings → results → outbox.

One thread takes stable studies from the store in batches (so a GPU backend can batch across
studies), prepares their images on a thread pool, runs the engine on the batch, writes each
study's result objects and queues them for every destination in the same transaction that marks
the study queued. Every step's outcome is a state change in the store: a crash at any point
leaves the study stable and it is read again after the restart (deterministic UIDs make the
second read's objects the same objects). A study whose data cannot be read or made into results
(a bad value, a corrupt image) is parked as failed at once with a PHI-free reason; a failure of the
moment (disk, database, engine) is retried ``pipeline.max_attempts`` times first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom

from node.config import NodeConfig
from node.context.gather import ContextGatherer
from node.context.pacs import PacsPriors
from node.engine import Engine, EngineRequest, EngineResult
from node.engine.errors import EngineLoadError, EngineUnavailable
from node.engine.factory import engine_profile, make_engine, resolve_model
from node.engine.profiles import ModelProfile
from node.infer import StudyOutcome, infer, prepare
from node.ops.errors import is_permanent, reason
from node.ops.logging import get_logger, uid_hash
from node.ops.metrics import Metrics
from node.results.hl7 import Hl7Party, critical
from node.results.writer import SR_FILE, ResultSet, write_results
from node.routing import Router
from node.store import COMPLETE, FAILED, QUEUED, Postponement, QueuedItem, StableStudy, Store

log = get_logger("pipeline")

IDLE_POLL_SECONDS = 0.5
#: While the engine cannot be reached, the pipeline waits this long, doubling up to the cap.
ENGINE_WAIT_SECONDS = 5.0
ENGINE_WAIT_CAP_SECONDS = 60.0


class MeteredEngine:
    """An engine whose batches are timed and counted in the metrics."""

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self._engine, self._metrics = engine, metrics

    @property
    def model_identity(self) -> str:
        """The wrapped engine's model identity."""
        return self._engine.model_identity

    def generate(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Run the wrapped engine and record batch size, duration and tokens per second."""
        started = time.perf_counter()
        results = self._engine.generate(requests)
        seconds = time.perf_counter() - started
        tokens = sum(result.completion_tokens for result in results)
        self._metrics.engine_batch_size.observe(len(requests))
        self._metrics.engine_seconds.observe(seconds)
        self._metrics.engine_tokens.inc(tokens)
        if seconds > 0 and tokens:
            self._metrics.engine_tokens_per_second.observe(tokens / seconds)
        return results


def hl7_parties(config: NodeConfig) -> dict[str, Hl7Party]:
    """MSH-3..6 and the filler order number per HL7 destination."""
    return {
        d.name: Hl7Party(d.sending_application, d.sending_facility, d.receiving_application,
                         d.receiving_facility, d.filler_order_number)
        for d in config.destinations.hl7
    }


class Pipeline:
    """Reads stable studies and queues their results."""

    def __init__(self, config: NodeConfig, store: Store, metrics: Metrics, on_queued: Callable[[], None]) -> None:
        self.config = config
        self._store, self._metrics, self._on_queued = store, metrics, on_queued
        self.results_root = config.storage.root / "results"
        self._router = Router.from_file(config.routing.rules)
        self._parties = hl7_parties(config)
        pacs = next((PacsPriors(d, config.dicom.ae_title) for d in config.destinations.dicom
                     if d.name == config.context.pacs), None)
        self._gatherer = ContextGatherer(store, config.storage.root, config.context.default_authority, pacs, metrics)
        self._engine: Engine | None = None
        self._profile: ModelProfile | None = None
        self._load_error: str | None = None
        self._load_finished = threading.Event()
        self._engine_wait = 0.0  # seconds to wait after the engine was unreachable; 0 while it answers
        self._engine_wait_until = 0.0
        self._pool = ThreadPoolExecutor(config.pipeline.imaging_workers, thread_name_prefix="imaging")
        # Engine batches run on their own threads, up to batches_in_flight at once; a study in one of
        # them is not taken again until its batch has ended.
        self._engine_pool = ThreadPoolExecutor(config.pipeline.batches_in_flight, thread_name_prefix="engine")
        self._slots = threading.BoundedSemaphore(config.pipeline.batches_in_flight)
        self._in_flight: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)

    # --- engine ------------------------------------------------------------------------------

    def load_engine(self) -> None:
        """Load the configured model (building the tiny test model when none is configured)."""
        try:
            engine_config = resolve_model(self.config.engine, self.config.storage.root)
            self._profile = engine_profile(engine_config)
            self._engine = MeteredEngine(make_engine(engine_config), self._metrics)
        except EngineLoadError as exc:
            self._load_error = str(exc)
            log.error("engine.load_failed", error=str(exc))
            return
        finally:
            self._load_finished.set()
        self._metrics.model_loaded.set(1)
        self._metrics.engine_available.set(1)
        log.info("engine.loaded", model=self._engine.model_identity)

    def load_finished(self) -> bool:
        """Whether the model load has ended, loaded or failed (start-up is over either way: a failure
        shows in readiness and ``qoqnode_model_loaded``, not in a restart loop)."""
        return self._load_finished.is_set()

    def not_ready_reason(self) -> str | None:
        """Why studies cannot be read now (None when the model is loaded)."""
        if self._engine is not None:
            return None
        return f"model failed to load: {self._load_error}" if self._load_error else "model is loading"

    # --- reading studies ------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> int:
        """Take one batch of due stable studies and start reading it (when a batch slot is free);
        returns how many studies it took."""
        now = time.time() if now is None else now
        if self._engine is None or now < self._engine_wait_until:
            return 0
        if not self._slots.acquire(blocking=False):
            return 0
        started = False
        try:
            with self._lock:
                busy = set(self._in_flight)
            candidates = self._store.studies.stable(now, self.config.pipeline.batch_size + len(busy))
            due = [s for s in candidates if (s.study_uid, s.version) not in busy][: self.config.pipeline.batch_size]
            to_read = self._prepare_batch(due)
            if to_read:
                studies = [study for study, _ in to_read]
                with self._lock:
                    self._in_flight.update((s.study_uid, s.version) for s in studies)
                self._engine_pool.submit(self._read_batch, studies, [outcome for _, outcome in to_read])
                started = True
            return len(due)
        finally:
            if not started:
                self._slots.release()

    def _prepare_batch(self, due: list[StableStudy]) -> list[tuple[StableStudy, StudyOutcome]]:
        """Route and image the studies; settle those that cannot be read; the rest, with their inputs."""
        prepared = list(self._pool.map(self._prepare, due))
        to_read = []
        for study, outcome in zip(due, prepared, strict=True):
            if isinstance(outcome, Exception):
                self._fail(study, "imaging", f"cannot prepare the study: {reason(outcome)}", is_permanent(outcome))
            elif outcome.final_skip:
                self._store.studies.skip(study.study_uid, study.version, outcome.skipped, time.time())
                self._metrics.study_transitions.labels("skipped").inc()
            elif outcome.skipped:  # an image that cannot be decoded: it will not decode on the next try either
                self._fail(study, "imaging", outcome.skipped, permanent=True)
            elif not self._waits_for_order(study, outcome):
                self._metrics.studies_read.labels("with" if outcome.context.given else "without").inc()
                to_read.append((study, outcome))
        return to_read

    def _waits_for_order(self, study: StableStudy, outcome: StudyOutcome) -> bool:
        """Whether the study is left to wait for its order (its task wants it, none has come, and
        ``context.order_wait_seconds`` since it became stable have not passed)."""
        until = study.stable_at + self.config.context.order_wait_seconds
        if outcome.context.order is not None or not outcome.context.order_wanted or time.time() >= until:
            return False
        if self._store.studies.postpone(study.study_uid, study.version, until, Postponement.ORDER):
            log.info("study.waiting_for_order", study=uid_hash(study.study_uid), seconds=round(until - time.time()))
        return True

    def context_arrived(self) -> None:
        """An HL7 message was kept: studies waiting for their order look again now."""
        if self._store.studies.release_postponed(Postponement.ORDER, time.time()):
            self._wake.set()

    def _read_batch(self, studies: list[StableStudy], prepared: list[StudyOutcome]) -> None:
        """Read one batch (on an engine thread), then free its slot and look for more."""
        try:
            self._read(studies, prepared)
        except Exception:  # a database hiccup: the studies stay stable and are taken again
            log.exception("pipeline.error")
        finally:
            with self._lock:
                self._in_flight.difference_update((s.study_uid, s.version) for s in studies)
            self._slots.release()
            self._wake.set()

    def _prepare(self, study: StableStudy) -> StudyOutcome | Exception:
        try:
            assert self._profile is not None  # studies are prepared only once the engine is loaded
            return prepare(study.study_uid, self._store.instances.study_files(study.study_uid), self._router,
                           self.config, self._profile, self._gatherer)
        except Exception as exc:  # an unreadable file must not stop the other studies
            log.error("study.prepare_failed", study=uid_hash(study.study_uid), exc_info=exc)
            return exc

    def _read(self, studies: list[StableStudy], prepared: list[StudyOutcome]) -> None:
        assert self._engine is not None
        try:
            outcomes = infer(prepared, self._engine, self.config)
        except EngineUnavailable as exc:  # not the studies' fault: they wait, no attempt is counted
            self._engine_unavailable(str(exc))
            return
        except Exception as exc:  # the whole batch failed in the engine: each study retries
            log.exception("engine.batch_failed", studies=len(studies))
            for study in studies:
                self._fail(study, "engine", f"engine failed: {reason(exc)}")
            return
        if self._engine_wait:
            log.info("engine.available_again")
            self._engine_wait = 0.0
            self._metrics.engine_available.set(1)
        for study, outcome in zip(studies, outcomes, strict=True):
            try:
                self._queue(study, outcome)
            except Exception as exc:
                log.exception("results.failed", study=uid_hash(study.study_uid))
                self._fail(study, "results", f"results failed: {reason(exc)}", is_permanent(exc))

    def _engine_unavailable(self, error: str) -> None:
        with self._lock:
            self._engine_wait = min(ENGINE_WAIT_CAP_SECONDS, max(ENGINE_WAIT_SECONDS, 2 * self._engine_wait))
            self._engine_wait_until = time.time() + self._engine_wait
        self._metrics.engine_available.set(0)
        log.warning("engine.unavailable", error=error, retry_in_seconds=self._engine_wait)

    def _previous_sr(self, study: StableStudy) -> pydicom.Dataset | None:
        """The report of the latest earlier version of this study, which the new one supersedes."""
        for version in range(study.version - 1, 0, -1):
            path = self.study_results_dir(study.study_uid, version) / SR_FILE
            if path.is_file():
                return pydicom.dcmread(path)
        return None

    def study_results_dir(self, study_uid: str, version: int) -> Path:
        """Where the results of one study version are written."""
        return self.results_root / study_uid / f"v{version}"

    def _queue(self, study: StableStudy, outcome: StudyOutcome) -> None:
        result = write_results(outcome, self.study_results_dir(study.study_uid, study.version), self._parties,
                               self.config.results.secondary_capture, study.version, self._previous_sr(study),
                               self.config.results.critical_labels)
        assert result is not None and outcome.findings is not None  # only read studies get here
        if critical(outcome.findings, self.config.results.critical_labels):
            self._metrics.critical_findings.inc()
        for kind, error in result.omitted:  # its message may quote source attributes: only its type is logged
            self._metrics.result_objects_omitted.labels(kind).inc()
            log.warning("results.object_omitted", study=uid_hash(study.study_uid), version=study.version, kind=kind,
                        error=type(error).__name__)
        now = time.time()
        items = self._items(result)
        if not self._store.studies.queue_results(study.study_uid, study.version, items, now):
            log.info("study.superseded", study=uid_hash(study.study_uid), version=study.version)
            return
        # with nowhere to deliver, the study is complete at once: that transition is counted too
        self._metrics.study_transitions.labels(QUEUED if items else COMPLETE).inc()
        self._metrics.stage_seconds.labels("read").observe(max(0.0, now - study.stable_at))
        log.info("study.queued", study=uid_hash(study.study_uid), version=study.version,
                 domain=outcome.task.domain if outcome.task else None, boxes=len(outcome.findings.boxes)
                 if outcome.findings else 0, objects=len(result.dicom), test_result=outcome.is_test_result)
        self._on_queued()

    def _items(self, result: ResultSet) -> list[QueuedItem]:
        items = [QueuedItem(d.name, "dicom", obj.sop_instance_uid, str(obj.path))
                 for d in self.config.destinations.dicom for obj in result.dicom]
        items += [QueuedItem(name, "hl7", control, str(path)) for name, (path, control) in result.messages.items()]
        return items

    def _fail(self, study: StableStudy, stage: str, why: str, permanent: bool = False) -> None:
        """Record a failed read: retried, unless ``permanent`` (the data, not the moment, is at fault: the
        next try would fail the same way) or the tries are used up; then parked as failed."""
        self._metrics.pipeline_failures.labels(stage).inc()
        state = self._store.studies.fail_attempt(study.study_uid, study.version, why, time.time(),
                                         1 if permanent else self.config.pipeline.max_attempts,
                                         self.config.pipeline.retry_seconds)
        # The reason may name files (and so patients): it goes to the store, not to the log.
        log.warning("study.read_failed", study=uid_hash(study.study_uid), stage=stage, state=state,
                    attempts=study.attempts + 1, permanent=permanent)
        if state == FAILED:
            self._metrics.study_transitions.labels(FAILED).inc()

    # --- thread --------------------------------------------------------------------------------

    def wake(self) -> None:
        """A study became stable: look now rather than at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        self.load_engine()
        while not self._stop.is_set() and self._engine is not None:
            try:
                if self.run_once():
                    continue
            except Exception:  # a database hiccup must not stop reading for good
                log.exception("pipeline.error")
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
        self._engine_pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def studies_in_flight(self) -> int:
        """How many studies are being read now."""
        with self._lock:
            return len(self._in_flight)
