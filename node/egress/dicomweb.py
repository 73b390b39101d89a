"""STOW-RS: result objects to a DICOMweb archive, and what the archive answered for each (PS3.18 10.5).

Objects go in multipart/related requests (``type="application/dicom"``) of at most ``MAX_REQUEST_BYTES``
(one object alone may be larger), each POSTed to ``{root}/studies`` asking for an application/dicom+json
answer. An answer is read per instance, as C-STORE statuses are (``node/egress/dicom.py``):

- no answer (connection refused or broken, a timeout), what ``node/http_client.py`` calls transient (408,
  425, 429, 500, 502, 503, 504), and 401/403/407 (credentials: an operator's fix, not the object's fault):
  every object is retried later;
- an object in the Failed SOP Sequence (0008,1198): its Failure Reason (0008,1197) decides (A7xx out of
  resources: retried; anything else: a dead letter), and is kept in the outbox item's reason;
- an object in the Referenced SOP Sequence (0008,1199): delivered, its Warning Reason (0008,1196) if any kept
  in the reason (a 202 whose warnings are coercions, discarded elements, a SOP class mismatch);
- an object named in neither: delivered on a 200 (everything was stored), retried on a 202 (the archive
  did not say; a resend is harmless: the same UIDs), a dead letter on any other 4xx (the reason: its status),
  retried on anything else (a redirect, which is not followed; 501).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from node.config import DicomWebDestination
from node.dicomweb.answer import StowAnswer, parse_answer
from node.dicomweb.auth import TokenError
from node.dicomweb.client import close_client, open_client
from node.dicomweb.multipart import stow_body
from node.dicomweb.response_module import JSON_MEDIA_TYPE, REASONS
from node.egress.dicom import classify_status
from node.egress.mllp import Delivery
from node.http_client import RETRYABLE_STATUS

#: Objects are sent together up to this many bytes per request.
MAX_REQUEST_BYTES = 16 * 2**20
#: At most this much of an answer's body is read.
MAX_ANSWER_BYTES = 2**20
#: Statuses after which the same request may succeed later: the shared transient ones, and refused credentials.
_TRANSIENT = RETRYABLE_STATUS | {401, 403, 407}


@dataclass(frozen=True)
class StowResult:
    """What the archive answered for one object."""

    delivery: Delivery
    detail: str


def _code(code: int | None) -> str:
    return "none given" if code is None else f"0x{code:04X}" + (f" ({REASONS[code]})" if code in REASONS else "")


def classify_answer(status: int, answer: StowAnswer | None, uid: str) -> StowResult:
    """The outcome of one object (``uid``) from a STOW-RS response's status and parsed body."""
    http = f"HTTP {status}"
    if status in _TRANSIENT:
        return StowResult(Delivery.RETRY, f"{http}: retried later")
    if answer is not None and uid in answer.failed:
        code = answer.failed[uid]
        delivery = classify_status(code)[0] if code is not None else Delivery.REJECTED
        return StowResult(delivery, f"{http}: failed, reason {_code(code)}")
    if answer is not None and uid in answer.stored:
        warning = answer.stored[uid]
        return StowResult(Delivery.ACCEPTED, "stored" if warning is None else f"stored with warning {_code(warning)}")
    if status == 200:
        return StowResult(Delivery.ACCEPTED, "stored")
    if status == 202:
        return StowResult(Delivery.RETRY, f"{http}: the answer does not name the object")
    if 400 <= status < 500:
        return StowResult(Delivery.REJECTED, f"{http}: refused")
    return StowResult(Delivery.RETRY, f"unexpected {http}")


def _batches(objects: Sequence[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    batch: list[tuple[str, bytes]] = []
    size = 0
    for uid, data in objects:
        if batch and size + len(data) > MAX_REQUEST_BYTES:
            yield batch
            batch, size = [], 0
        batch.append((uid, data))
        size += len(data)
    if batch:
        yield batch


def _answer_text(response: httpx.Response) -> str:
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk[: MAX_ANSWER_BYTES - len(body)]
        if len(body) >= MAX_ANSWER_BYTES:
            break
    return body.decode("utf-8", "replace")


class StowSender:
    """Sends result objects to one DICOMweb archive over a pooled HTTP client."""

    def __init__(self, destination: DicomWebDestination) -> None:
        self._destination = destination
        self._client = open_client(destination)

    def close(self) -> None:
        """Close the client's connections (and its token endpoint's)."""
        close_client(self._client)

    def probe(self) -> bool:
        """Whether the archive answers a QIDO-RS now (a cheap probe of a destination that was down)."""
        try:
            response = self._client.get("studies", params={"limit": "1"}, headers={"Accept": JSON_MEDIA_TYPE})
        except (httpx.HTTPError, TokenError, OSError):
            return False
        return response.status_code < 500 and response.status_code not in _TRANSIENT

    def _post(self, batch: Sequence[tuple[str, bytes]]) -> dict[str, StowResult]:
        content_type, body = stow_body([data for _, data in batch])
        headers = {"Content-Type": content_type, "Accept": JSON_MEDIA_TYPE}
        try:
            with self._client.stream("POST", "studies", content=body, headers=headers) as response:
                status, text = response.status_code, _answer_text(response)
                answer = parse_answer(response.headers.get("Content-Type", ""), text)
        except httpx.TimeoutException:
            failure = f"no answer within {self._destination.timeout_seconds:g} s"
        except (httpx.HTTPError, TokenError) as exc:
            failure = str(exc) if isinstance(exc, TokenError) else f"connection failed: {type(exc).__name__}"
        except OSError as exc:  # a credentials file that cannot be read
            failure = f"credentials unreadable: {type(exc).__name__}"
        else:
            return {uid: classify_answer(status, answer, uid) for uid, _ in batch}
        return {uid: StowResult(Delivery.RETRY, failure) for uid, _ in batch}

    def send(self, objects: Sequence[tuple[str, Path]]) -> list[StowResult]:
        """STOW-RS every object (SOP Instance UID, Part 10 file); a result for each, never raises."""
        results: dict[str, StowResult] = {}
        readable = []
        for uid, path in objects:
            try:
                readable.append((uid, path.read_bytes()))
            except OSError as exc:  # the result file is gone: nothing to resend
                results[uid] = StowResult(Delivery.REJECTED, f"result file unreadable: {type(exc).__name__}")
        for batch in _batches(readable):
            results.update(self._post(batch))
        return [results[uid] for uid, _ in objects]
