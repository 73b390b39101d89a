"""The answers of a validation run, kept so that a second run asks the engine only for what is new: one
file per answer, keyed by the study, the model's identity and the exact request (question, context,
images, signals), written whole or not at all."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from node.durable import write_atomically
from node.engine import EngineRequest


@dataclass(frozen=True)
class Answer:
    """What the engine said of one request, as it said it."""

    text: str
    model: str
    is_test_result: bool


def answer_key(study_uid: str, model: str, request: EngineRequest) -> str:
    """The cache key of ``request`` for ``study_uid`` asked of ``model``: a SHA-256 over all three."""
    digest = hashlib.sha256()
    for part in (study_uid, model, request.prompt):
        digest.update(part.encode("utf-8") + b"\0")
    for image in request.images:
        digest.update(f"{image.mode}{image.size}".encode() + image.tobytes())
    for signal in request.time_series:
        digest.update(str(signal.shape).encode() + signal.tobytes())
    return digest.hexdigest()


class AnswerCache:
    """Answers under ``directory``, one JSON file per key."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> Answer | None:
        """The kept answer of ``key``, or None (never kept, or unreadable)."""
        try:
            kept = json.loads((self._directory / f"{key}.json").read_text(encoding="utf-8"))
            return Answer(str(kept["text"]), str(kept["model"]), bool(kept["is_test_result"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, answer: Answer) -> None:
        """Keep ``answer`` under ``key``."""
        data = {"text": answer.text, "model": answer.model, "is_test_result": answer.is_test_result}
        write_atomically(self._directory / f"{key}.json", json.dumps(data).encode("utf-8"))
