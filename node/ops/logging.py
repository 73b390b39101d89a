"""structlog configuration: JSON events, with patient-identifying fields scrubbed.

Code logs UIDs through :func:`uid_hash`, never raw patient data; the scrubber is the
second line of defence for a field that slips through. Every line on stderr is a JSON event:
an exception is its type and the code locations it passed (never its message, which may quote
a patient's values), the standard logging of libraries and Python warnings come as JSON events
(with their text only from loggers whose text is PHI-free), and progress bars are off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import traceback
from collections.abc import MutableMapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pydicom.config
import structlog

from node.errors import clip_detail

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
#: Libraries whose log text names associations, addresses and AE titles, never dataset values.
TEXT_KEPT_FROM = ("pynetdicom", "uvicorn", "urllib3")


def uid_hash(uid: str) -> str:
    """A short, stable, non-reversible tag for a UID, for logs and correlation."""
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:12]


def scrub_phi(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace the value of any patient-identifying key."""
    for key in list(event):
        if key.lower() in PHI_KEYS:
            event[key] = REDACTED
    return event


def _exception_fields(exc_info: object) -> dict[str, Any] | None:
    """An exception as its type and the frames it passed (file:line in function), innermost last."""
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[0] is None:
        return None
    kind, _, tb = exc_info
    frames = traceback.extract_tb(tb) if isinstance(tb, TracebackType) else []
    return {"type": kind.__name__,
            "frames": [f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in frames[-8:]]}


def exception_fields(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``exc_info`` becomes an ``exception`` field without the message."""
    exc_info = event.pop("exc_info", None)
    fields = _exception_fields(exc_info) if exc_info else None
    if fields:
        event["exception"] = fields
    return event


class _JsonLines(logging.Handler):
    """The standard logging of libraries (and Python warnings) as JSON events on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        event: dict[str, Any] = {"component": record.name, "event": "library.log",
                                 "level": record.levelname.lower(),
                                 "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat()}
        if record.name.startswith(TEXT_KEPT_FROM):
            event["message"] = clip_detail(record.getMessage())
        if record.exc_info:
            event["exception"] = _exception_fields(record.exc_info)
        try:
            sys.stderr.write(json.dumps(event) + "\n")
        except Exception:  # logging must never take the node down
            self.handleError(record)


def _quiet_libraries() -> None:
    """No progress bars, no warnings quoting dataset values on reading (the node repairs what it copies)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


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
            exception_fields if fmt == "json" else structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # one write per event, newline included: a line from another writer on stderr (the stdlib
        # logging of a library) cannot land between an event and its newline (print() writes twice)
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # pynetdicom logs dataset contents at DEBUG; keep it to warnings so no PHI leaks through it.
    root = logging.getLogger()
    root.handlers = [_JsonLines()] if fmt == "json" else [logging.StreamHandler(sys.stderr)]
    root.setLevel(logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    _quiet_libraries()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to the component ``name``."""
    return structlog.get_logger(component=name)
