"""Wires the stages together and owns their lifecycles: start, drain, stop.

Ingest (SCP → spool → store) → assembler (stable studies) → scheduler (route → gather → image →
read → results → queue) → one outbox worker per destination (PACS, EHR). Each hand-over is a state
change in the store, so a restart picks up wherever the previous run stood. Every part is built here,
once; ``qoq-node infer`` and ``engine serve`` use the same builders (:func:`build_router`,
:func:`build_gatherer`, :func:`node.engine_host.build_engine`).
"""

from __future__ import annotations

import shutil
import threading

from node import __version__
from node.config import NodeConfig, require_usable
from node.context.dicomweb import DicomWebPriors
from node.context.gather import ContextGatherer
from node.context.pacs import PacsPriors, PriorsSource
from node.egress.worker import make_workers
from node.engine_host import EngineHost
from node.feedback.api import feedback_routes
from node.feedback.submit import closed_sets
from node.ingest import pynetdicom_patches
from node.ingest.assembler import StudyAssembler
from node.ingest.commits import GroupCommit
from node.ingest.hl7_listener import Hl7Listener
from node.ingest.receiver import ROOM_RECHECK_SECONDS, Receiver, forget_torn_instances
from node.ingest.rejection import Rejections
from node.ingest.scp import StorageScp
from node.ingest.spool import Spool
from node.ingest.stow.endpoint import StowReceiver
from node.ops.http import WebServer
from node.ops.logging import get_logger
from node.ops.metrics import Metrics
from node.ops.probes import ops_routes
from node.quality.baseline import load_evaluation
from node.quality.collector import watch_quality
from node.retention import Retention
from node.routing import Router
from node.routing.orders import OrderFinder
from node.scheduler import Scheduler
from node.store import STUDY_STATES, Store
from node.verdicts.stage import ReportVerdicts

log = get_logger("app")

STATE_DB_NAME = "state.db"


def open_store(config: NodeConfig) -> Store:
    """The state database under ``storage.root``."""
    return Store(config.storage.root / STATE_DB_NAME)


def build_router(config: NodeConfig, store: Store | None = None) -> Router:
    """The routing rules ``routing.rules`` names (unset: the shipped ones); with ``store``, each study's HL7
    order is routed on too."""
    router = Router.from_file(config.routing.rules)
    return router.with_orders(OrderFinder(store.clinical, config.context.default_authority)) if store else router


def priors_source(config: NodeConfig) -> PriorsSource | None:
    """Where priors come from: the ``destinations.dicom`` (C-FIND/C-GET) or ``destinations.dicomweb``
    (QIDO-RS/WADO-RS) entry ``context.pacs`` names; None when it names none."""
    name = config.context.pacs
    for dicom in config.destinations.dicom:
        if dicom.name == name:
            return PacsPriors(dicom, config.dicom.ae_title)
    for web in config.destinations.dicomweb:
        if web.name == name:
            return DicomWebPriors(web, config.dicom.max_instance_bytes)
    return None


def build_gatherer(config: NodeConfig, store: Store, metrics: Metrics | None = None) -> ContextGatherer:
    """The context gatherer over ``store``, asking the PACS or DICOMweb archive ``context.pacs`` names when it
    names one."""
    pacs = priors_source(config)
    return ContextGatherer(store, config.storage.root, config.context.default_authority, pacs, metrics)


class Node:
    """One running node: the SCP, the assembler, the scheduler, the outbox workers and the operations
    endpoint."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = require_usable(config)  # the files and variables it names are there
        root = config.storage.root
        root.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.metrics.start_at_zero(self.metrics.study_transitions, STUDY_STATES)
        self.store = open_store(config)
        self.spool = Spool(root)
        self.torn_instances_forgotten = forget_torn_instances(self.store)
        self.workers = make_workers(config.destinations, config.dicom.ae_title, self.store, self.metrics)
        self.engine = EngineHost(config, self.metrics)
        self.verdicts = ReportVerdicts(self.store, Router.from_file(config.routing.rules).rules.domains)
        self.gatherer = build_gatherer(config, self.store, self.metrics)
        self.scheduler = Scheduler(config, self.store, self.metrics, self.engine, build_router(config, self.store),
                                   self.gatherer, on_queued=self._wake_workers)
        self.assembler = StudyAssembler(self.store, self.metrics, config.study.stable_seconds,
                                        on_stable=self.scheduler.wake)
        self.retention = Retention(self.store, self.spool, self.scheduler.results.root, self.metrics,
                                   config.storage.retention_days)
        self.commits = GroupCommit(self.store)
        self.receiver = Receiver(self.store, self.spool, self.commits, self.metrics, config.storage.min_free_bytes,
                                 frozenset(config.dicom.ignored_sop_classes), config.dicom.max_instance_bytes,
                                 config.dicom.max_inflated_bytes, Rejections(self.store, self.metrics))
        self.scp = StorageScp(config.dicom, self.receiver, self.assembler, self.metrics)
        self.hl7 = Hl7Listener(config.hl7_listener, config.context.default_authority, self.store, self.spool,
                               self.metrics, on_context=self._context_arrived) \
            if config.hl7_listener.enabled else None
        self.metrics.watch_state(self.store.studies.counts, self.store.outbox.counts, root)
        watch_quality(self.metrics, self.store, config.quality, load_evaluation(config.quality.baseline))
        self.stow = StowReceiver(config.dicomweb.stow, self.receiver, self.assembler, self.metrics) \
            if config.dicomweb.stow.enabled else None
        self.stow_server = self.stow.own_listener(config.http.body_idle_seconds) \
            if self.stow is not None else None  # None: on self.web
        stow_routes = self.stow.routes() if self.stow is not None and self.stow_server is None else []
        self.web = WebServer(config.http.host, config.http.port,
                             [*ops_routes(self.metrics.render, self.not_ready_reasons, self.engine.load_finished),
                              *feedback_routes(self.store, closed_sets(build_router(config)), config.feedback),
                              *stow_routes], body_idle_seconds=config.http.body_idle_seconds)
        self._stopped = threading.Event()

    def _wake_workers(self) -> None:
        """A study's results are queued: wake the delivery workers, and judge the reports that waited for it."""
        for worker in self.workers:
            worker.wake()
        self.verdicts.settle()

    def _context_arrived(self) -> None:
        """An HL7 message is kept: studies waiting for their order are due, and a report is judged if it can be."""
        self.scheduler.context_arrived()
        self.verdicts.settle()

    def not_ready_reasons(self) -> list[str]:
        """Why the node cannot take studies now (empty when ready)."""
        reasons = []
        if not self.scp.listening:
            reasons.append("DICOM listener is not accepting associations")
        if not self.receiver.has_room():  # the rule C-STORE answers by
            reasons.append(f"no room to store instances: free disk {shutil.disk_usage(self.config.storage.root).free} "
                           f"bytes against storage.min_free_bytes, or a write failed less than "
                           f"{ROOM_RECHECK_SECONDS:g} s ago")
        engine = self.engine.not_ready_reason()
        if engine:
            reasons.append(engine)
        return reasons

    def start(self) -> None:
        """Start every stage; returns once the node is serving. Refuses (:class:`UntestedPynetdicom`) a
        pynetdicom the node's patches of it were not tested with."""
        pynetdicom_patches.prepare()
        self.web.start()
        if self.stow_server is not None:
            self.stow_server.start()
        for worker in self.workers:
            worker.start()
        self.scheduler.start()
        self.assembler.start()
        # the first settling looks at every answer once (judging again what a newer answer outdated, e.g. after
        # an upgrade): done here, not on the first HL7 message's way to its ACK
        self.verdicts.settle()
        self.scp.start()
        if self.hl7 is not None:
            self.hl7.start()
        self.retention.start()
        log.info("node.started", version=__version__, http_port=self.web.port, dicom_port=self.scp.port,
                 hl7_port=self.hl7.port if self.hl7 is not None else None,
                 stow_port=self.stow_server.port if self.stow_server is not None else None,
                 partial_writes_removed=self.spool.partial_writes_removed,
                 torn_instances_forgotten=self.torn_instances_forgotten)

    def stop(self, drain_seconds: float = 30.0) -> None:
        """Stop accepting, let open associations finish (up to ``drain_seconds``), then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("node.stopping", open_associations=self.scp.open_associations())
        self.scp.stop_accepting()
        if self.hl7 is not None:
            self.hl7.stop()
        self.scp.drain(drain_seconds)
        if self.stow_server is not None:
            self.stow_server.stop()
        if self.stow is not None:
            self.stow.close()  # before the group commit stops: the parts being stored finish first
        self.commits.stop()
        self.assembler.stop()
        self.assembler.sweep()
        self.scheduler.stop()
        self.gatherer.close()  # the scheduler asks it no more
        self.retention.stop()
        for worker in self.workers:
            worker.stop()  # each closes its destination's connections
        self.web.stop()
        self.store.close()
        log.info("node.stopped")
