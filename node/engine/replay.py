"""The ``replay`` backend: recorded responses instead of a model.

For integration tests, and for hospital IT to rehearse the PACS/EHR plumbing before a GPU is
installed. The responses file maps a domain name (or ``"*"`` for any) to the response text.
Everything it produces is a test result and is labelled so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from node.engine import EngineRequest, EngineResult
from node.errors import NodeError

MODEL_IDENTITY = "replay (recorded responses; TEST RESULT, not a model output)"


class ReplayError(NodeError):
    """The responses file cannot be used; the message says why."""


class ReplayEngine:
    """Answers each request with the recorded response for its domain."""

    def __init__(self, responses: dict[str, str]) -> None:
        bad = [key for key, value in responses.items() if not isinstance(key, str) or not isinstance(value, str)]
        if bad or not responses:
            raise ReplayError("replay responses must be a non-empty mapping of domain name (or '*') to text")
        self._responses = dict(responses)

    @classmethod
    def from_file(cls, path: Path) -> ReplayEngine:
        """Load responses from a JSON file."""
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ReplayError(f"cannot read replay responses {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ReplayError(f"replay responses {path} is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ReplayError(f"replay responses {path} must be a JSON object")
        return cls(loaded)

    @property
    def model_identity(self) -> str:
        """Provenance for outputs: a replay is never a model."""
        return MODEL_IDENTITY

    def generate(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """The recorded response of each request's domain (or of ``"*"``); empty text if neither."""
        results = []
        for request in requests:
            started = time.perf_counter()
            text = self._responses.get(request.domain, self._responses.get("*", ""))
            results.append(EngineResult(text, 0, 0, time.perf_counter() - started, MODEL_IDENTITY, True))
        return results
