"""The JSON error answer of the node's HTTP APIs (the feedback API, the STOW-RS receiver): ``{"error": reason}``
with the status, the reason quoting nothing a client sent."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse


def json_error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``{"error": reason}`` answered with ``status`` (and ``headers``)."""
    return JSONResponse({"error": reason}, status, headers=headers)
