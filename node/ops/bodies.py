"""Request bodies within a limit, for the routes of :class:`node.ops.http.WebServer`.

Starlette's own ``Route(max_body_size=...)`` answers 413 in plain text, past the application's JSON error
handlers; these raise :class:`~starlette.exceptions.HTTPException` (413) instead, which the server's
handlers answer as JSON like every other error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request

#: Seconds a request body may pause between two chunks before it is answered 408.
BODY_IDLE_SECONDS = 30.0


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body over {limit} bytes")


async def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; 413 at once when ``Content-Length`` says more than ``limit``, or
    as soon as the chunks go past it (nothing beyond the limit is kept); 408 when the body pauses for
    :data:`BODY_IDLE_SECONDS`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    received = 0
    chunks = request.stream()
    while True:
        try:
            with anyio.fail_after(BODY_IDLE_SECONDS):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise HTTPException(408, f"request body paused over {BODY_IDLE_SECONDS:g} s") from None
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (413 beyond)."""
    return b"".join([chunk async for chunk in limited_stream(request, limit)])
