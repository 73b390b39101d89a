"""Errors of the engine layer that callers report to people."""

from node.errors import NodeError, TransientError


class EngineLoadError(NodeError):
    """The model cannot be loaded; the message says why and what to do."""


class EngineUnavailable(TransientError):
    """A remote engine cannot be reached or keeps failing; the studies wait (it is not their fault)."""
