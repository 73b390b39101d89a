"""``POST /v1/feedback`` and its OpenAPI document (``GET /v1/openapi.json``), as Starlette routes the node's web
server serves; none when ``feedback.tokens_file`` is unset (the API is off). Answers are JSON: 200 once the verdict is
on disk; 401 without a known bearer token, 403 for a reader role the token may not post, 404 for a study the
node has not answered, 408 for a body that pauses (``http.body_idle_seconds``), 413 for a body
over :data:`MAX_BODY_BYTES`, 422 for a bad body, 503 when the tokens cannot be read or the server's body slots
are all taken (:func:`node.ops.bodies.read_body`) — each with a reason that quotes nothing sent."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from node import __version__
from node.config.quality import FeedbackConfig
from node.errors import reason
from node.feedback.submit import FeedbackBody, FeedbackRefused, parse, submit
from node.ops.bodies import read_body
from node.ops.json_error import json_error
from node.ops.logging import get_logger
from node.ops.offload import off_loop
from node.ops.tokens import TokenSecret, TokensError, Unauthorized
from node.store import Store

log = get_logger("feedback")

MAX_BODY_BYTES = 16_384
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_ANSWERS = {"401": "no bearer token, or not a known one", "403": "the token may not post that reader_role",
            "404": "the node has no result for that study", "408": "the body paused too long",
            "413": "the body is too long",
            "422": "the body is not a verdict (the reason names the field), or a label is outside the task's closed "
                   "set", "503": "the tokens cannot be read, or too many bodies are being received (Retry-After)"}


def openapi() -> dict[str, Any]:
    """The API's OpenAPI 3.1 document."""
    body = FeedbackBody.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "openapi": "3.1.0",
        "info": {"title": "qoq-node feedback API", "version": __version__,
                 "description": "A reader's verdict on the node's result for a study."},
        "paths": {"/v1/feedback": {"post": {
            "summary": "Keep a verdict on the node's result for a study",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/FeedbackBody"}}}},
            "responses": {
                "200": {"description": "kept, on disk", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"task": {"type": "string"}, "version": {"type": "integer"},
                                                     "verdict": {"type": "string"},
                                                     "labels": {"type": "array", "items": {"type": "string"}}}}}}},
                **{status: {"description": why, "content": {"application/json": {"schema": _ERROR}}}
                   for status, why in _ANSWERS.items()}}}}},
        "components": {"schemas": {"FeedbackBody": body},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _refusal(status: int, message: str) -> JSONResponse:
    return json_error(status, message, {"WWW-Authenticate": "Bearer"} if status == 401 else None)


async def _body(request: Request) -> object:
    """The request's JSON body; :class:`FeedbackRefused` when not JSON (422); too long (413), paused (408) or no
    body slot free (503): the server's JSON error."""
    data = await read_body(request, MAX_BODY_BYTES)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise FeedbackRefused(422, "the body is not JSON") from None


def feedback_routes(store: Store, closed_sets: Mapping[str, Sequence[str]],
                    config: FeedbackConfig) -> list[BaseRoute]:
    """The API's routes over ``store``, checking labels against ``closed_sets`` (task → labels); none when
    ``config.tokens_file`` is unset. TokensError when its secret cannot be read or is not valid (at start)."""
    if config.tokens_file is None:
        return []
    secret = TokenSecret(config.tokens_file, "feedback.tokens_file")

    async def post_feedback(request: Request) -> JSONResponse:
        try:
            name = await off_loop(secret.client, request.headers.get("authorization"))
        except Unauthorized as exc:
            return _refusal(401, str(exc))
        except TokensError as exc:
            log.error("feedback.tokens_unreadable", error=reason(exc))
            return _refusal(503, "the feedback tokens cannot be read")
        try:
            body = parse(await _body(request))
            verdict = await off_loop(submit, store, closed_sets, config, body, config.token_roles.get(name))
        except FeedbackRefused as exc:
            log.info("feedback.refused", status=exc.status, token=name)
            return _refusal(exc.status, exc.reason)
        log.info("feedback.kept", task=verdict.task, verdict=verdict.verdict, token=name)
        return JSONResponse({"task": verdict.task, "version": verdict.version, "verdict": verdict.verdict,
                             "labels": list(verdict.found or ())})

    async def get_openapi(_: Request) -> JSONResponse:
        return JSONResponse(openapi())

    return [Route("/v1/feedback", post_feedback, methods=["POST"]),
            Route("/v1/openapi.json", get_openapi, methods=["GET"])]
