"""The operators' routes: ``/metrics``, ``/healthz`` (alive), ``/startupz`` (start-up done: the model load
has finished, for a Kubernetes startup probe) and ``/readyz`` (serving).

``/healthz`` is answered on the event loop itself, behind no scrape; the others are computed on at most
:data:`node.ops.http.WORKERS` threads of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from node.ops.http import WORKERS

#: A readiness check returns the list of reasons the node is not ready (empty: ready).
ReadinessCheck = Callable[[], list[str]]


def ops_routes(render_metrics: Callable[[], bytes], readiness: ReadinessCheck,
               started: Callable[[], bool]) -> list[BaseRoute]:
    """The four ops routes over the node's metrics, readiness and start-up checks (GET only)."""
    limiter = anyio.CapacityLimiter(WORKERS)

    async def off_loop(compute: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(compute, limiter=limiter)

    async def metrics(_request: Request) -> Response:
        return Response(await off_loop(render_metrics), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def startupz(_request: Request) -> Response:
        done = bool(await off_loop(started))
        return JSONResponse({"started": done}, 200 if done else 503)

    async def readyz(_request: Request) -> Response:
        reasons = await off_loop(readiness)
        return JSONResponse({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)

    return [Route("/metrics", metrics, methods=["GET"]), Route("/healthz", healthz, methods=["GET"]),
            Route("/startupz", startupz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
