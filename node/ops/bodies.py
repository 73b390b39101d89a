"""Request bodies within a limit, for the routes of :class:`node.ops.http.WebServer`.

Starlette's own ``Route(max_body_size=...)`` answers 413 in plain text, past the application's JSON error
handlers; these raise :class:`~starlette.exceptions.HTTPException` (413) instead, which the server's
handlers answer as JSON like every other error. Every body is read under one of the server's body slots
(:class:`node.ops.http.BodySlots`: 503 when all are taken), so that bodies in flight leave room for the
probes, and is answered 408 when it pauses the server's ``body_idle_seconds`` (``http.body_idle_seconds``; its
slot then given back, and the connection closed: RFC 9110 15.5.9).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request

from node.ops.http import body_slots


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body over {limit} bytes")


async def limited_stream(request: Request, limit: int | None) -> AsyncGenerator[bytes]:
    """The body's chunks as they arrive, under a body slot (503 at once when none is free); 413 at once when
    ``Content-Length`` says more than ``limit``, or as soon as the chunks go past it (nothing beyond the limit
    is kept; None: no limit on the whole, the route limits its parts); 408 when the body pauses for the
    server's ``body_idle_seconds`` (with ``Connection: close``: the rest of the body is never read). A caller
    that may stop before the end closes the stream (``contextlib.aclosing``), so that the slot is given back
    at once."""
    declared = request.headers.get("content-length", "")
    if limit is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    slots = body_slots(request)
    with slots.slot():
        received = 0
        chunks = request.stream()
        while True:
            try:
                with anyio.fail_after(slots.idle_seconds):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise HTTPException(408, f"request body paused over {slots.idle_seconds:g} s",
                                    headers={"Connection": "close"}) from None
            received += len(chunk)
            if limit is not None and received > limit:
                raise _too_large(limit)
            yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (413 beyond)."""
    return b"".join([chunk async for chunk in limited_stream(request, limit)])
