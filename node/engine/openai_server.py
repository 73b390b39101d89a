"""``qoq-node engine serve``: a local engine behind an OpenAI-compatible chat-completions API.

Serves the configured ``transformers``/``tensorrt-llm``/``replay`` engine to nodes that use the
``openai`` backend: one GPU box for several nodes where trtllm-serve or vLLM is not available, and
the server the tests run the ``openai`` backend against. Endpoints: ``GET /v1/models``,
``POST /v1/chat/completions`` (non-streaming; images only as ``data:`` URLs — the server never
fetches a URL), ``GET /health``. Requests that arrive together are batched (up to ``max_batch``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.engine import Engine, EngineRequest, EngineResult, GenerationSettings
from node.engine.openai_backend import EXTENSION_FIELD
from node.errors import DataError
from node.model.prompt import IMAGE_MARKER
from node.ops.bodies import read_body
from node.ops.http import BODY_IDLE_SECONDS, BodySlots, WebServer, error_detail
from node.ops.logging import get_logger
from node.ops.offload import off_loop

log = get_logger("engine.serve")

DEFAULT_MAX_TOKENS = 1024
MAX_BODY_BYTES = 256 * 1024 * 1024
#: Completion requests held at once (a body being read or parsed, or its request waiting for or in the engine),
#: so at most this many × :data:`MAX_BODY_BYTES` (2 GiB) of bodies and their images are in memory; one more is
#: answered 503 (``Retry-After``: the node's openai backend waits and tries again). The engine generates one
#: batch at a time, so requests held beyond a batch would only wait, each costing its body's memory; 8 fills
#: the default ``--max-batch``.
MAX_REQUESTS = 8


class BadRequest(DataError):
    """The request cannot be served; the message goes back to the client."""


def decode_data_url(url: str) -> Image.Image:
    """The image of a base64 ``data:image/...`` URL."""
    header, _, payload = url.partition(",")
    if not (header.startswith("data:image/") and header.endswith(";base64")):
        raise BadRequest("images must be base64 data: URLs (this server never fetches URLs)")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
    except (binascii.Error, UnidentifiedImageError, OSError) as exc:
        raise BadRequest(f"an image_url is not a readable image: {exc}") from exc
    return image


def engine_request(body: dict[str, Any]) -> EngineRequest:
    """A chat-completions body as an engine request: the images and text of its last user turn, in their
    order (an image marker where each image stands, as the node's own prompts have them)."""
    messages = body.get("messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"] if isinstance(messages,
                                                                                                   list) else []
    if not users:
        raise BadRequest("messages must hold a user turn")
    content = users[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise BadRequest("a user turn's content is a string or a list of parts")
    images, pieces = [], []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if IMAGE_MARKER in part["text"]:
                raise BadRequest(f"text may not hold {IMAGE_MARKER!r}: images are image_url parts")
            pieces.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            images.append(decode_data_url(str(part["image_url"].get("url", ""))))
            pieces.append(IMAGE_MARKER)
        else:
            raise BadRequest(f"unsupported content part {kind!r}: text and image_url only")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    try:
        settings = GenerationSettings(max_new_tokens=int(max_tokens), temperature=float(body.get("temperature") or 0),
                                      seed=int(body.get("seed") or 0), min_new_tokens=int(body.get("min_tokens") or 0))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"max_tokens, temperature and seed are numbers: {exc}") from exc
    if settings.max_new_tokens < 1 or settings.temperature < 0:
        raise BadRequest("max_tokens must be at least 1 and temperature not negative")
    return EngineRequest(images=tuple(images), prompt="".join(pieces), domain="*", settings=settings)


@dataclass
class _Pending:
    request: EngineRequest
    future: Future[EngineResult]


class Batcher:
    """Runs the engine on one thread, batching the requests that are waiting (same settings together)."""

    def __init__(self, engine: Engine, max_batch: int) -> None:
        self._engine, self._max_batch = engine, max_batch
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="engine-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: EngineRequest) -> Future[EngineResult]:
        """Queue one request; its future holds the result or the engine's exception."""
        pending = _Pending(request, Future())
        self._queue.put(pending)
        return pending.future

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            waiting = [first]
            while len(waiting) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                waiting.append(item)
            for settings in dict.fromkeys(p.request.settings for p in waiting):
                batch = [p for p in waiting if p.request.settings == settings]
                try:
                    results = self._engine.generate([p.request for p in batch])
                except Exception as exc:  # the clients get the error; the server keeps serving
                    for pending in batch:
                        pending.future.set_exception(exc)
                    continue
                for pending, result in zip(batch, results, strict=True):
                    pending.future.set_result(result)

    def close(self) -> None:
        """Finish the queued requests and stop."""
        self._queue.put(None)
        self._thread.join(timeout=60)


def completion(result: EngineResult, served_model: str, max_tokens: int) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object for one engine result; the engine's identity is the
    ``system_fingerprint``, and whether it is a test result goes in the ``qoq_node`` field."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served_model,
        "system_fingerprint": result.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                     "finish_reason": "length" if result.completion_tokens >= max_tokens else "stop"}],
        "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                  "total_tokens": result.prompt_tokens + result.completion_tokens},
        EXTENSION_FIELD: {"is_test_result": result.is_test_result},
    }


async def _openai_error(request: Request, exc: Exception) -> Response:
    """An HTTP error as OpenAI's error object."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(404, f"no route {request.url.path}", "not_found_error")
    return _error(exc.status_code, error_detail(exc), "invalid_request_error", exc.headers)


async def _server_error(_request: Request, exc: Exception) -> Response:
    return _error(500, f"internal error: {type(exc).__name__}", "server_error")


def _error(status: int, message: str, kind: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers)


def _parse(raw: bytes) -> dict[str, Any]:
    """A request body as its JSON object."""
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise BadRequest("the body is a JSON object")
    if body.get("stream"):
        raise BadRequest("streaming is not supported")
    return body


class EngineServer:
    """The server: a Starlette app on the node's :class:`~node.ops.http.WebServer`; binds at construction
    (port 0 picks a free one: :attr:`port`), :meth:`start` serves on a thread of its own, :meth:`stop` ends
    it and the batcher. A request body pausing ``body_idle_seconds`` (``http.body_idle_seconds``) is answered 408."""

    def __init__(self, host: str, port: int, engine: Engine, served_model: str, max_batch: int = 8,
                 max_requests: int = MAX_REQUESTS, body_idle_seconds: float = BODY_IDLE_SECONDS) -> None:
        self.served_model = served_model
        self.batcher = Batcher(engine, max_batch)
        self._requests = BodySlots(max_requests)  # held from the body's first byte to the answer
        routes = [Route(path, self._models, methods=["GET"]) for path in ("/v1/models", "/v1/models/")]
        routes += [Route("/health", self._health, methods=["GET"])]
        routes += [Route(path, self._complete, methods=["POST"])
                   for path in ("/v1/chat/completions", "/v1/chat/completions/")]
        self._web = WebServer(host, port, routes, config_keys="engine serve --host, --port", name="engine-serve",
                              exception_handlers={HTTPException: _openai_error, Exception: _server_error},
                              max_bodies=max_requests, body_idle_seconds=body_idle_seconds)

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self._web.port

    def start(self) -> None:
        """Serve in a background thread."""
        self._web.start()

    def stop(self) -> None:
        """Stop serving, then stop the batcher."""
        self._web.stop()
        self.batcher.close()

    async def _models(self, _request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.served_model, "object": "model", "owned_by": "qoq-node"}]})

    async def _health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _complete(self, request: Request) -> Response:
        """``/v1/chat/completions``: one of :data:`MAX_REQUESTS` held (503 when none is free), parsed off the
        loop, generated by the batcher."""
        with self._requests.slot():
            return await self._generate(request)

    async def _generate(self, request: Request) -> Response:
        try:
            body = await off_loop(_parse, await read_body(request, MAX_BODY_BYTES))
            if body.get("model") != self.served_model:
                return _error(404, f"model '{body.get('model')}' is not served here", "not_found_error")
            engine_input = await off_loop(engine_request, body)  # decodes the images
            result = await asyncio.wrap_future(self.batcher.submit(engine_input))
        except (BadRequest, ValueError) as exc:  # includes images not at their model size
            return _error(400, str(exc), "invalid_request_error")
        except HTTPException:  # the body's own answer (408 paused, 413), by _openai_error
            raise
        except Exception as exc:
            log.exception("engine.serve_failed")
            return _error(500, f"the engine failed: {type(exc).__name__}", "server_error")
        return JSONResponse(completion(result, self.served_model, engine_input.settings.max_new_tokens))
