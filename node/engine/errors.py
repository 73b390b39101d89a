"""Errors of the engine layer that callers report to people."""


class EngineLoadError(RuntimeError):
    """The model cannot be loaded; the message says why and what to do."""
