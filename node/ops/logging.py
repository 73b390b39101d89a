"""structlog configuration: JSON events, with patient-identifying fields scrubbed.

Code logs UIDs through :func:`uid_hash`, never raw patient data; the scrubber is the
second line of defence for a field that slips through.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

#: Event keys that may carry patient identity; their values are replaced before output.
PHI_KEYS = frozenset(
    {
        "patient_name",
        "patientname",
        "patient_id",
        "patientid",
        "patient_birth_date",
        "patientbirthdate",
        "birth_date",
        "other_patient_ids",
        "accession_number",
    }
)
REDACTED = "[redacted]"


def uid_hash(uid: str) -> str:
    """A short, stable, non-reversible tag for a UID, for logs and correlation."""
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:12]


def scrub_phi(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace the value of any patient-identifying key."""
    for key in list(event):
        if key.lower() in PHI_KEYS:
            event[key] = REDACTED
    return event


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog (and the stdlib loggers of our libraries) to write to stderr."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    numeric_level = logging.getLevelName(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            scrub_phi,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # one write per event, newline included: a line from another writer on stderr (the stdlib
        # logging of a library) cannot land between an event and its newline (print() writes twice)
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # pynetdicom logs dataset contents at DEBUG; keep it to warnings so no PHI leaks through it.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to the component ``name``."""
    return structlog.get_logger(component=name)
