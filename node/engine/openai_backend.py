"""The ``openai`` backend: QoQ-Med on an OpenAI-compatible chat-completions server.

This is how inference scales past one machine: ``trtllm-serve``, vLLM or SGLang (or
``qoq-node engine serve``) on GPU servers behind a Service, and nodes that send them studies.
Each request carries the images as training pre-resized them (the frame the model's boxes are in),
as lossless PNG data URLs, laid out as training laid them out; the server's processor rounds them
to its grid as the training's did. The prompt-token count the server reports must cover the visual
tokens of that grid (``engine.family`` says whose): a server that shrank the images further is
refused, since its boxes would not be in the node's coordinates. An ECG signal cannot be carried by
the chat-completions API: ECG studies for Omni need a local backend.

Requests run concurrently up to ``engine.openai.max_concurrency``; a request the server could not answer
(connection refused, timeout, 429, 5xx) is retried with backoff, and when the retries are spent
the batch raises :class:`~node.engine.errors.EngineUnavailable`, which leaves the studies waiting
rather than failing them. A 4xx answer is the request's own fault and fails it with the server's
message.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from PIL import Image

from node.config import EngineConfig
from node.engine import EngineRequest, EngineResult
from node.engine.chat import require_inputs_fit, user_turn
from node.engine.errors import EngineLoadError, EngineUnavailable
from node.errors import NodeError, clip_detail
from node.http_client import is_transient, outbound_client, retry_after
from node.model.profiles import ModelProfile
from node.ops.logging import get_logger

log = get_logger("engine.openai")

BACKOFF_CAP_SECONDS = 30.0
#: The non-standard field of ``qoq-node engine serve``'s answers that carries what OpenAI's API has no room for.
EXTENSION_FIELD = "qoq_node"


def png_data_url(image: Image.Image) -> str:
    """The image as a lossless PNG ``data:`` URL (the pixels exactly as the node resized them)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_url_item(image: Image.Image) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": png_data_url(image)}}


def visual_tokens(request: EngineRequest, profile: ModelProfile) -> int:
    """How many visual tokens the request's images make on the processor's grid."""
    return sum(profile.visual_tokens(image.width, image.height) for image in request.images)


def is_test_answer(answer: dict[str, Any]) -> bool:
    """Whether the answer says it comes from a test engine (``qoq-node engine serve`` on the tiny test
    model or the replay backend says so in its ``qoq_node`` extension field)."""
    extension = answer.get(EXTENSION_FIELD)
    return isinstance(extension, dict) and extension.get("is_test_result") is True


class ServerError(NodeError):
    """An answer from the server that is not a completion; ``retryable`` says whether to try again."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable, self.retry_after = retryable, retry_after


class OpenAIEngine:
    """A client of an OpenAI-compatible server serving QoQ-Med."""

    def __init__(self, config: EngineConfig, profile: ModelProfile, api_key: str | None = None) -> None:
        options = config.openai
        assert options.url is not None and options.served_model is not None  # the config validator guarantees it
        self.profile = profile
        self._root = options.url.rstrip("/")
        self._served_model = options.served_model
        self._retries = options.retries
        headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {api_key}"} if api_key else {})
        # connect failures count against engine.openai.retries, with the rest: none retried inside the client
        self._client = outbound_client(read_seconds=options.timeout_seconds, max_connections=options.max_concurrency,
                                       headers=headers, connect_retries=0)
        self._pool = ThreadPoolExecutor(options.max_concurrency, thread_name_prefix="openai")
        self._server = httpx.URL(self._root).netloc.decode("ascii")
        self._check_model_served()

    @property
    def model_identity(self) -> str:
        """The served model's name and the server (host:port) that serves it."""
        return f"{self._served_model} on OpenAI-compatible server {self._server}"

    # --- HTTP ----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        # the url is http(s) only: the config's pattern guarantees it
        try:
            response = self._client.request(method, self._root + path, json=body)
        except httpx.TransportError as exc:  # cannot connect (after the transport's retries), timeout, dropped
            raise ServerError(f"cannot reach {self._server}: {type(exc).__name__}: {exc}", retryable=True) from exc
        if not response.is_success:
            raise ServerError(f"HTTP {response.status_code}: {_error_message(response)}", is_transient(response),
                              retry_after(response))
        try:
            answer = response.json()
        except ValueError as exc:
            raise ServerError(f"{self._server} answered something that is not JSON: {exc}", retryable=True) from exc
        if not isinstance(answer, dict):
            raise ServerError(f"{self._server} answered JSON that is not an object", retryable=True)
        return answer

    def served_models(self) -> list[str]:
        """The model names the server lists (``GET /models``); :class:`ServerError` when it does not answer."""
        listed = self._call("GET", "/models")
        entries = listed.get("data", []) if isinstance(listed, dict) else []
        return [str(entry.get("id")) for entry in entries if isinstance(entry, dict)]

    def _check_model_served(self) -> None:
        """Refuse to start when the server answers but does not serve ``served_model`` (a configuration
        mistake); a server that does not answer yet is fine: studies wait for it."""
        try:
            names = self.served_models()
        except ServerError as exc:
            log.warning("engine.server_unreachable", server=self._server, error=str(exc))
            return
        if self._served_model not in names:
            raise EngineLoadError(f"the server at {self._root} does not serve '{self._served_model}' (it serves: "
                                  f"{', '.join(map(str, names)) or 'nothing'}); fix engine.openai.served_model")

    # --- generation ----------------------------------------------------------------------------

    def _body(self, request: EngineRequest) -> dict[str, Any]:
        settings = request.settings
        body = {
            "model": self._served_model,
            "messages": user_turn(request, _image_url_item),
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "seed": settings.seed,
            "n": 1,
            "stream": False,
        }
        if settings.min_new_tokens:  # an extension vLLM, trtllm-serve and qoq-node engine serve understand
            body.update(min_tokens=settings.min_new_tokens, ignore_eos=True)
        return body

    def _complete(self, request: EngineRequest) -> EngineResult:
        body = self._body(request)
        started = time.perf_counter()
        for attempt in range(self._retries + 1):
            try:
                answer = self._call("POST", "/chat/completions", body)
                break
            except ServerError as exc:
                if not exc.retryable:
                    raise ValueError(f"the engine server refused the request: {exc}") from exc
                if attempt == self._retries:
                    raise EngineUnavailable(f"{exc} (after {attempt + 1} tries)") from exc
                delay = exc.retry_after or min(BACKOFF_CAP_SECONDS, 0.5 * 2**attempt)
                log.warning("engine.request_retry", server=self._server, error=str(exc), attempt=attempt + 1,
                            delay_seconds=delay)
                time.sleep(delay)
        return self._result(answer, request, time.perf_counter() - started)

    def _result(self, answer: dict[str, Any], request: EngineRequest, seconds: float) -> EngineResult:
        try:
            message = answer["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"the engine server's answer has no choices[0].message ({type(exc).__name__})") from exc
        text = message.get("content") if isinstance(message, dict) else None
        listed_usage = answer.get("usage")
        usage: dict[str, Any] = listed_usage if isinstance(listed_usage, dict) else {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        expected = visual_tokens(request, self.profile)
        if prompt_tokens and prompt_tokens < expected:
            raise ValueError(f"the engine server counted {prompt_tokens} prompt tokens for images of {expected} "
                             f"visual tokens on a {self.profile.family} grid: it resized the images, so its boxes "
                             "would not be in the node's coordinates; check engine.family and the server's max_pixels")
        # The engine behind the name, where the server says (qoq-node engine serve does), else the served name.
        model = str(answer.get("system_fingerprint") or answer.get("model") or self._served_model)
        return EngineResult(
            text=text if isinstance(text, str) else "",
            prompt_tokens=prompt_tokens,
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=seconds,
            model=f"{model} via {self._server}",
            is_test_result=is_test_answer(answer),
        )

    def generate(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Send every request (``openai.max_concurrency`` at a time); results in request order."""
        require_inputs_fit(requests, self.profile)
        if any(request.time_series for request in requests):
            raise ValueError("the openai backend cannot send an ECG signal (the chat-completions API has no "
                             "time-series input); read ECG studies with a local transformers engine")
        return list(self._pool.map(self._complete, requests))


def _error_message(response: httpx.Response) -> str:
    """The server's error text: OpenAI's ``{"error": {"message": ...}}`` or the first 200 characters."""
    try:
        detail = response.json()["error"]
        return clip_detail(str(detail.get("message", detail) if isinstance(detail, dict) else detail))
    except (ValueError, KeyError, TypeError):
        return response.content[:200].decode("utf-8", "replace") or response.reason_phrase
