"""The STOW-RS route: ``POST /dicomweb/studies[/{study}]`` — the client authorized, the body parsed as it
streams in (:func:`node.ops.bodies.limited_stream`: under one of the server's body slots, 408 when it pauses),
each part stored as soon as it has ended (on :data:`WORKERS` threads: fsync and commit block) while the next
arrives, then one answer for all of them (:mod:`node.ingest.stow.response`). Nothing blocking runs on the event
loop: the tokens secret is read, and each chunk written into its part's spool file (inflated, when deflated),
by :func:`node.ops.offload.off_loop`, one chunk of a request at a time and in order (the next is read once the
last is written: a request holds one chunk in memory). Each answer is
counted in ``qoqnode_stow_requests_total{status}`` by its HTTP status class (2xx, 4xx, 5xx); the instances
themselves are counted with C-STORE's (``qoqnode_cstore_*``), as they are stored through the same path."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from node.config.dicom import TlsConfig
from node.config.dicomweb import StowConfig
from node.dicomweb.multipart import MultipartError, MultipartReader
from node.dicomweb.response_module import JSON_MEDIA_TYPE, XML_MEDIA_TYPE
from node.errors import reason
from node.ingest.assembler import StudyAssembler
from node.ingest.receiver import Receiver
from node.ingest.refusals import OUT_OF_RESOURCES, check_target_uid
from node.ingest.stow.clients import Clients, Forbidden, Unauthorized
from node.ingest.stow.multipart import UnsupportedMediaType, boundary_of
from node.ingest.stow.parts import PartReceiver, PartResult
from node.ingest.stow.response import http_status, response_module, to_json, to_xml, wants_xml
from node.ops.bodies import limited_stream
from node.ops.http import WebServer
from node.ops.json_error import json_error
from node.ops.logging import get_logger, uid_hash
from node.ops.metrics import Metrics
from node.ops.offload import off_loop
from node.ops.tokens import TokensError

log = get_logger("stow")

#: Threads storing parts (each waits on its fsync and the group commit), shared by every request: an executor of
#: their own, not :func:`~node.ops.offload.off_loop`, as a request's parts are stored while its body is read on
#: (a future per part, awaited when the answer is made) and :meth:`StowReceiver.close` waits for them all.
WORKERS = 16
#: Parts of one request being stored at once; the body is read on once one is done (memory stays bounded).
PARTS_IN_FLIGHT = 8
#: Reasons named in ``Warning`` headers (RFC 7234 5.5, PS3.18 8.4.4) of one answer, at most.
WARNINGS = 8
#: The HTTP status classes of the answers counted (exported at 0 from the start).
STATUS_CLASSES = ("2xx", "4xx", "5xx")


def listener_tls(tls: TlsConfig) -> dict[str, object] | None:
    """uvicorn's TLS settings for the receiver's own listener (None: plain HTTP); with a CA, client
    certificates it signed are required."""
    if not tls.enabled:
        return None
    settings: dict[str, object] = {"ssl_certfile": str(tls.certificate), "ssl_keyfile": str(tls.private_key)}
    if tls.ca is not None:
        settings |= {"ssl_ca_certs": str(tls.ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return settings


class _Request:
    """One STOW-RS request's parts: made as their headers end, stored as they end. Like an association, the
    request carries the studies of its instances (the assembler does not call them stable) until it ends."""

    def __init__(self, receiver: Receiver, assembler: StudyAssembler, executor: ThreadPoolExecutor, client: str,
                 study: str | None) -> None:
        self._receiver, self._assembler, self._executor = receiver, assembler, executor
        self._client, self._study = client, study
        self._parts: list[PartReceiver] = []
        self.storing: list[asyncio.Future[PartResult]] = []

    def _store(self, part: PartReceiver) -> PartResult:
        result = part.store()
        if result.study_uid is not None:
            self._assembler.carried_by(id(self), result.study_uid)
        return result

    def ended(self) -> None:
        """The request is over, its parts stored: its studies' quiet timers decide alone."""
        self._assembler.association_closed(id(self))

    def open_part(self, headers: dict[str, str]) -> PartReceiver:
        part = PartReceiver(len(self._parts) + 1, headers, self._receiver, self._client, self._study)
        self._parts.append(part)
        return part

    async def store_ended(self) -> None:
        """Start storing the parts that have ended; wait while :data:`PARTS_IN_FLIGHT` are being stored."""
        loop = asyncio.get_running_loop()
        while self._parts and self._parts[0].ended:
            part = self._parts.pop(0)
            try:
                self.storing.append(loop.run_in_executor(self._executor, self._store, part))
            except RuntimeError:  # the node is stopping: the part is not stored, the client keeps it
                part.abandon()
                self.storing.append(loop.create_future())
                self.storing[-1].set_result(PartResult(part.number, "", "", OUT_OF_RESOURCES, "the node is stopping"))
        in_flight = [future for future in self.storing if not future.done()]
        if len(in_flight) >= PARTS_IN_FLIGHT:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)


class StowReceiver:
    """The STOW-RS receiver's routes, its clients and its storing threads."""

    def __init__(self, config: StowConfig, receiver: Receiver, assembler: StudyAssembler, metrics: Metrics) -> None:
        self._config = config
        self._requests = metrics.stow_requests
        metrics.start_at_zero(self._requests, STATUS_CLASSES)
        self._receiver = receiver
        self._assembler = assembler
        self._clients = Clients(config)
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="stow")
        self._closing = False

    def own_listener(self, body_idle_seconds: float) -> WebServer | None:
        """The receiver's own HTTP(S) server when ``dicomweb.stow.port`` is set (bound now), a body pausing
        ``body_idle_seconds`` (``http.body_idle_seconds``, as on the node's HTTP server) answered 408; None: its
        :meth:`routes` go on the node's HTTP server."""
        if self._config.port is None:
            return None
        return WebServer(self._config.host, self._config.port, self.routes(), name="stow",
                         config_keys="dicomweb.stow.host, dicomweb.stow.port", ssl=listener_tls(self._config.tls),
                         body_idle_seconds=body_idle_seconds)

    def routes(self) -> list[BaseRoute]:
        """``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}``."""
        return [Route("/dicomweb/studies", self.store, methods=["POST"]),
                Route("/dicomweb/studies/{study}", self.store, methods=["POST"])]

    def close(self) -> None:
        """Stop taking requests (503), wait for the parts being stored, then stop the storing threads."""
        self._closing = True
        self._executor.shutdown(wait=True)

    async def store(self, request: Request) -> Response:
        """Answer one STOW-RS request (see the module's docstring), and count the answer."""
        response = await self._store(request)
        self._requests.labels(f"{response.status_code // 100}xx").inc()
        return response

    async def _store(self, request: Request) -> Response:
        started = time.perf_counter()
        if self._closing:
            return json_error(503, "the node is stopping", {"Retry-After": "30"})
        try:
            client = await off_loop(self._clients.authorize, request.headers.get("authorization"))
        except Unauthorized as exc:
            return json_error(401, str(exc), {"WWW-Authenticate": 'Bearer realm="dicomweb"'})
        except Forbidden as exc:
            log.warning("stow.forbidden", detail=str(exc))
            return json_error(403, str(exc))
        except TokensError as exc:
            log.error("stow.tokens_file_unreadable", error=reason(exc))
            return json_error(503, "the receiver's tokens file cannot be read; see the node's log")
        study = request.path_params.get("study")
        try:
            if study is not None:
                check_target_uid(study)
            boundary = boundary_of(request.headers.get("content-type"))
        except UnsupportedMediaType as exc:
            return json_error(415, str(exc))
        except ValueError as exc:
            return json_error(400, str(exc))
        try:
            results, broken = await self._receive(request, boundary, client, study)
        except HTTPException as exc:  # before the body's first part: no body slot free (503), or it paused (408)
            return json_error(exc.status_code, exc.detail, exc.headers)
        status = broken.status_code if broken else http_status(results)
        log.info("stow.request", client=client, study=uid_hash(study) if study else None, parts=len(results),
                 stored=sum(result.stored for result in results), status=status,
                 error=broken.detail if broken else None, seconds=round(time.perf_counter() - started, 3))
        return self._answer(status, results, broken, request.headers.get("accept"))

    async def _receive(self, request: Request, boundary: bytes, client: str,
                       study: str | None) -> tuple[list[PartResult], HTTPException | None]:
        """Store the body's parts as they end; the results, and the status and reason the body broke off with
        (None: it did not). The body's own error (:mod:`node.ops.bodies`) before its first part is raised."""
        parts = _Request(self._receiver, self._assembler, self._executor, client, study)
        reader = MultipartReader(boundary, parts.open_part, self._config.max_parts, "dicomweb.stow.max_parts")
        broken = None
        try:
            try:
                async with aclosing(limited_stream(request, None)) as chunks:  # each part within dicom.* limits
                    async for chunk in chunks:
                        await off_loop(reader.feed, chunk)
                        await parts.store_ended()
                await off_loop(reader.finish)
            except MultipartError as exc:
                broken = HTTPException(400, str(exc))
            except ClientDisconnect:
                broken = HTTPException(400, "the client closed the connection before the body's end")
            except HTTPException as exc:
                if not reader.parts:
                    raise
                broken = exc
            await parts.store_ended()
            return list(await asyncio.gather(*parts.storing)), broken
        finally:  # whatever ended it: the part being received is let go, and once the parts being stored are,
            await off_loop(reader.abandon)  # the request carries no study any more
            asyncio.gather(*parts.storing, return_exceptions=True).add_done_callback(lambda _: parts.ended())

    def _answer(self, status: int, results: list[PartResult], broken: HTTPException | None,
                accept: str | None) -> Response:
        reasons = ([broken.detail] if broken else []) + [result.reason for result in results if result.reason]
        headers = dict(broken.headers or {}) if broken else {}  # a 408's Connection: close
        if reasons:
            headers["Warning"] = ", ".join(f'299 qoq-node {json.dumps(reason[:200])}' for reason in reasons[:WARNINGS])
        module = response_module(results)
        if wants_xml(accept):
            return Response(to_xml(module), status, headers=headers, media_type=XML_MEDIA_TYPE)
        return Response(json.dumps(to_json(module)), status, headers=headers, media_type=JSON_MEDIA_TYPE)
