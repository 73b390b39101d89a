"""The node's own errors: one root, and whether a failure will recur.

Every exception the node raises on purpose is a :class:`NodeError`. Its message is written to name
codes, files and limits, never a patient's values, so it may go to the studies' detail; and it says
whether it is ``permanent``: the data is at fault and every try would fail the same way (settled at
once), or the moment is (retried). Each stage maps the library errors it expects at its boundary to
one of these. Anything else is *unexpected* — a bug, or a library's surprise — and is treated as
transient: retried ``pipeline.max_attempts`` times with backoff, then failed with its type. Library
exceptions quote the values they choke on (a malformed birth date, a patient's name), so their
messages never go to logs, metrics or the studies' detail.
"""

from __future__ import annotations

from typing import ClassVar


class NodeError(Exception):
    """An error the node raises on purpose; its message carries no patient data."""

    #: The data is at fault: every try fails the same way, so it is settled at once.
    permanent: ClassVar[bool] = False


class DataError(NodeError):
    """What was received cannot be used as it is (a malformed dataset, an undecodable image, an HL7
    message without a patient): permanent."""

    permanent = True


class TransientError(NodeError):
    """A failure of the moment (a peer that does not answer, a disk that is full): retried."""


def reason(exc: BaseException) -> str:
    """The exception's type, and its message when it is one of the node's own."""
    name = type(exc).__name__
    if isinstance(exc, NodeError):
        return f"{name}: {exc}"
    return f"{name} (its message may quote the study's values and is not kept; the log has where it arose)"


def is_permanent(exc: BaseException) -> bool:
    """Whether the failure will recur on every try: only a node error that says so. An unexpected
    exception (a library's, a bug) is retried before it is settled."""
    return isinstance(exc, NodeError) and exc.permanent


#: How much of a reason or detail is kept (the studies' and the outbox's detail, a log's library message).
DETAIL_CHARS = 500


def clip_detail(text: str) -> str:
    """A reason or detail cut to :data:`DETAIL_CHARS` characters, as it is kept."""
    return text[:DETAIL_CHARS]
