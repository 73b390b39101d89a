"""Errors of the engine layer that callers report to people."""


class EngineLoadError(RuntimeError):
    """The model cannot be loaded; the message says why and what to do."""


class EngineUnavailable(RuntimeError):
    """A remote engine cannot be reached or keeps failing; the studies wait (it is not their fault)."""
