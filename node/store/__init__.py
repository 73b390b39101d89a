"""The state database: studies, instances, deliveries, quarantine (:mod:`node.store.studies`) and the
clinical context (:mod:`node.store.clinical`), one module per concern over one connection
(:mod:`node.store.database`). All stages talk to state through :class:`Store`."""

from node.store.studies import (
    COMPLETE,
    DEAD,
    FAILED,
    FINISHED,
    PENDING,
    QUEUED,
    RECEIVING,
    SENT,
    SKIPPED,
    STABLE,
    STUDY_STATES,
    UNDELIVERED,
    InstanceRecord,
    OutboxItem,
    QuarantinedObject,
    QueuedItem,
    Settled,
    StableStudy,
    Store,
    StoredFile,
    StudySummary,
    StudyUpdate,
)

__all__ = [
    "COMPLETE", "DEAD", "FAILED", "FINISHED", "PENDING", "QUEUED", "RECEIVING", "SENT", "SKIPPED", "STABLE",
    "STUDY_STATES", "UNDELIVERED", "InstanceRecord", "OutboxItem", "QuarantinedObject", "QueuedItem", "Settled",
    "StableStudy", "Store", "StoredFile", "StudySummary", "StudyUpdate",
]
