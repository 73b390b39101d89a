"""Why something failed, in words that carry no patient data.

Library exceptions quote the values they choke on — a malformed birth date, a patient's name — so
their messages never go to logs, metrics or the studies' detail. :func:`reason` keeps the message only
of the node's own exceptions, whose texts are written to name codes, files and limits, not values.
"""

from __future__ import annotations

#: The node's own exception types whose messages are PHI-free by construction (by name, so this
#: ground-floor module imports none of the stages).
OWN_MESSAGES = frozenset({"ImagingError", "NotForModel", "EngineUnavailable", "EngineLoadError", "PacsError",
                          "Hl7Error", "UnsupportedMessage", "RoutingError"})

#: Exceptions that say the data will fail the same way every time (settled at once, not retried).
PERMANENT = (ValueError, KeyError, AttributeError, TypeError, IndexError, NotImplementedError, UnicodeError)


def reason(exc: BaseException) -> str:
    """The exception's type, and its message when it is one of the node's own."""
    name = type(exc).__name__
    if name in OWN_MESSAGES:
        return f"{name}: {exc}"
    return f"{name} (its message may quote the study's values and is not kept; the log has where it arose)"


def is_permanent(exc: BaseException) -> bool:
    """Whether the failure comes from the data (it recurs on every try) rather than from the moment
    (disk, database, network: worth retrying)."""
    return isinstance(exc, PERMANENT) and not isinstance(exc, OSError | TimeoutError)


#: The most characters of a reason or detail that are kept (in a study's detail, an outbox item's last
#: error, a log line's library message): enough to say what happened, never a whole dump.
DETAIL_CHARS = 500


def clip_detail(text: str) -> str:
    """A reason or detail cut to :data:`DETAIL_CHARS` characters, as it is kept."""
    return text[:DETAIL_CHARS]
