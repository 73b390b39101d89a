"""The operators' routes: ``/metrics``, ``/healthz`` (alive), ``/startupz`` (start-up done: the model load
has finished, for a Kubernetes startup probe) and ``/readyz`` (serving).

``/healthz`` is answered on the event loop itself, behind no scrape; the others are computed off the loop on
the :data:`node.ops.offload.OPS` threads (their own: busy uploads do not hold them).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from node.ops.offload import OPS, off_loop

#: A readiness check returns the list of reasons the node is not ready (empty: ready).
ReadinessCheck = Callable[[], list[str]]


def ops_routes(render_metrics: Callable[[], bytes], readiness: ReadinessCheck,
               started: Callable[[], bool]) -> list[BaseRoute]:
    """The four ops routes over the node's metrics, readiness and start-up checks (GET only)."""

    async def metrics(_request: Request) -> Response:
        return Response(await off_loop(render_metrics, pool=OPS), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def startupz(_request: Request) -> Response:
        done = await off_loop(started, pool=OPS)
        return JSONResponse({"started": done}, 200 if done else 503)

    async def readyz(_request: Request) -> Response:
        reasons = await off_loop(readiness, pool=OPS)
        return JSONResponse({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)

    return [Route("/metrics", metrics, methods=["GET"]), Route("/healthz", healthz, methods=["GET"]),
            Route("/startupz", startupz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
