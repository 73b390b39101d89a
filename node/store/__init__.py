"""The state database: one :class:`~node.store.database.Database` (connection and lock) and one module
per concern over it — :mod:`~node.store.instances`, :mod:`~node.store.studies` (the study state
machine), :mod:`~node.store.outbox`, :mod:`~node.store.quarantine`, :mod:`~node.store.retention` and
:mod:`~node.store.clinical`, and the quality record: :mod:`~node.store.answers` and
:mod:`~node.store.verdicts`; :mod:`~node.store.schema` makes the tables. All stages talk to state
through a :class:`Store` and its concerns (``store.studies.settle(...)``)."""

from pathlib import Path

from node.ops.logging import get_logger
from node.store import schema
from node.store.answers import Answer, Answers
from node.store.clinical import ClinicalStore
from node.store.database import Database
from node.store.instances import InstanceRecord, Instances, StoredFile, StudyUpdate
from node.store.keys import IdentifierKeys, load_secret
from node.store.outbox import Outbox, OutboxItem, OutboxState, QueuedItem
from node.store.quarantine import Quarantine, QuarantinedObject
from node.store.reports import Reports
from node.store.retention import Expiry
from node.store.studies import (
    FINISHED,
    POSTPONEMENT_DETAIL,
    Postponement,
    Settled,
    StableStudy,
    Studies,
    StudyState,
    StudySummary,
)
from node.store.verdicts import Verdict, Verdicts

log = get_logger("store")

#: The states by their short names, as the stages and tests compare them.
RECEIVING, STABLE, QUEUED, COMPLETE, SKIPPED, FAILED, UNDELIVERED = StudyState
STUDY_STATES = tuple(StudyState)
PENDING, SENT, DEAD, CANCELLED = OutboxState


class Store:
    """The node's state database: it opens the one :class:`Database` and holds a part per concern."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        """Open the state database at ``path`` (made when missing); ``read_only``: an existing one, for
        reading only, as a running node's tests and tools look at it."""
        self.database = Database(path, read_only)
        if not read_only:
            with self.database.reading() as connection:
                schema.create(connection)
        secret, made = load_secret(path.parent, create=not read_only)
        #: The node's keys of identifiers (:mod:`node.store.keys`).
        self.keys = IdentifierKeys(secret)
        if made and self._keyed_rows():
            log.warning("store.identifier_key_made", detail="the quality record has rows keyed under a lost key:"
                        " corrections of reports received before now will not find their verdicts")
        self.instances = Instances(self.database)
        self.studies = Studies(self.database)
        self.outbox = Outbox(self.database)
        self.quarantine = Quarantine(self.database)
        self.retention = Expiry(self.database, self.keys)
        #: Orders, lab results, patients and retrieved priors: the clinical context.
        self.clinical = ClinicalStore(self.database)
        #: The quality record: what the node answered, and the verdicts on those answers.
        self.answers = Answers(self.database, self.keys)
        self.verdicts = Verdicts(self.database, self.keys)
        #: Radiology reports received, waiting for or matched with the study they report.
        self.reports = Reports(self.database)

    def _keyed_rows(self) -> bool:
        """Whether the quality record has a row keyed under the node's key (not the plain SHA-256 of old)."""
        with self.database.reading() as db:
            return any(db.execute(f"SELECT 1 FROM {table} WHERE keyed = 1 LIMIT 1").fetchone()  # noqa: S608
                       for table in ("answers", "verdicts"))

    def close(self) -> None:
        """Close the connection."""
        self.database.close()


__all__ = [
    "COMPLETE", "DEAD", "FAILED", "FINISHED", "PENDING", "POSTPONEMENT_DETAIL", "QUEUED", "RECEIVING", "SENT",
    "SKIPPED", "STABLE", "STUDY_STATES", "UNDELIVERED", "Answer", "InstanceRecord", "OutboxItem", "OutboxState",
    "Postponement", "QuarantinedObject", "QueuedItem", "Settled", "StableStudy", "Store", "StoredFile", "StudyState",
    "StudySummary", "StudyUpdate", "Verdict",
]
