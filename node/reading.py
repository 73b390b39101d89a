"""The read stage: prepared studies → one engine batch → what the model said of each (:class:`Read`).

Each study is asked its task's training question, with one image marker per image and the patient's
context before it, and its ECG signal; the model's text is parsed into findings (total over any text)
and its boxes located on the source pixels through each image's geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from node.context.text import context_text
from node.engine import Engine, EngineRequest, GenerationSettings
from node.findings import Findings, locate, parse_output
from node.imaging.prepared import Prepared
from node.model.prompt import build_prompt


@dataclass(frozen=True)
class Read:
    """One study as the model read it: the findings in its text, and who read it when."""

    prepared: Prepared
    findings: Findings  # with the model's whole text in ``raw_text``
    model: str  # the model's identity: name and version, for provenance
    is_test_result: bool  # a replay or test model: never clinical output
    analysed_at: datetime  # when the engine was given the study (the SR's Content Date/Time)
    seconds: float = 0.0  # the engine's time for the batch the study was in
    prompt_tokens: int = 0
    completion_tokens: int = 0


def prompt_context(prepared: Prepared) -> str:
    """The context paragraph that goes before the question (empty when none was given)."""
    return context_text(prepared.context, prepared.current_images, prepared.routed.modality, bool(prepared.signals))


def engine_request(prepared: Prepared, settings: GenerationSettings) -> EngineRequest:
    """The request for one prepared study: its images (its own, then its priors'), the task's training
    question with one image marker per image and the patient's context before it, and its ECG signal."""
    return EngineRequest(
        tuple(model_input.image for model_input in prepared.inputs),
        build_prompt(prepared.task.spec.prompt_question, len(prepared.inputs), prompt_context(prepared)),
        prepared.task.domain,
        settings,
        tuple(signal.signal for signal in prepared.signals),
    )


def read_from_text(prepared: Prepared, text: str, model: str, is_test_result: bool,
                   analysed_at: datetime | None = None) -> Read:
    """What ``text`` from ``model`` says of a prepared study: its findings, boxes located on the sources."""
    findings = locate(parse_output(text), [model_input.geometry for model_input in prepared.inputs])
    return Read(prepared, findings, model, is_test_result, analysed_at or datetime.now().astimezone())


def read_batch(prepared: Sequence[Prepared], engine: Engine, settings: GenerationSettings) -> list[Read]:
    """The read stage: one engine batch over ``prepared``, each study's findings located on its sources."""
    analysed_at = datetime.now().astimezone()
    results = engine.generate([engine_request(study, settings) for study in prepared])
    return [
        replace(read_from_text(study, result.text, result.model, result.is_test_result, analysed_at),
                seconds=result.seconds, prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
        for study, result in zip(prepared, results, strict=True)
    ]
