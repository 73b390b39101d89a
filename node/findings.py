"""Raw model text → :class:`Findings`: reasoning, answer labels, and evidence boxes on source pixels.

Model output is untrusted text. :func:`parse_output` is total — it never raises, whatever it
is given — and keeps the raw text verbatim; what it could not use it reports as warnings.
The output format it reads (see QoQ-Med's release): reasoning in ``<think>…</think>``,
boxes as a fenced JSON list of ``{"bbox_2d": [x1, y1, x2, y2], "label": …}`` in model-input
pixels (variants: one object, ``{"objects_of_interest": […]}``, single quotes, no fence,
truncated JSON), and the answer in ``\\boxed{…}`` with conditions separated by ", ",
" and " or " & ".
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from node.imaging.geometry import Geometry, SourceBox

#: Text beyond this many characters is kept in ``raw_text`` but not searched.
MAX_PARSED_CHARS = 200_000
MAX_BOXES = 64
MAX_LABEL_CHARS = 64
DEFAULT_BOX_LABEL = "finding"

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_BOXED = re.compile(r"\\boxed\s*\{")
_FLAT_OBJECT = re.compile(r"\{[^{}]{0,2000}?bbox_2d[^{}]{0,2000}?\}")
_ANSWER_SEPARATORS = re.compile(r",\s+|\s+and\s+|\s*&\s*")
_TEXT_WRAPPER = re.compile(r"\\text\{([^{}]*)\}")
T = TypeVar("T")
#: What a label may not hold: C0 and C1 controls, DEL, lone surrogates.
_NOT_LABEL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class ModelBox:
    """An evidence box as the model gave it, in model-input pixels of input ``image_index``."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    image_index: int = 0


@dataclass(frozen=True)
class ParsedOutput:
    """What could be read from one model response."""

    reasoning: str
    labels: tuple[str, ...]
    boxes: tuple[ModelBox, ...]
    raw_text: str
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class LocatedBox:
    """A box on the source image, with the model-space box it came from."""

    label: str
    model: ModelBox
    source: SourceBox


@dataclass(frozen=True)
class Findings:
    """One study's result: reasoning, answer labels, boxes on source pixels, the raw text."""

    reasoning: str
    labels: tuple[str, ...]
    boxes: tuple[LocatedBox, ...]
    raw_text: str
    warnings: tuple[str, ...]


def _reasoning(text: str) -> str:
    match = _THINK.search(text)
    if match:
        return match.group(1).strip()
    # No think block: the prose before the first box block or answer.
    cut = min((m.start() for m in (_FENCE.search(text), _BOXED.search(text)) if m), default=len(text))
    return text[:cut].strip()


def _boxed_contents(text: str) -> list[str]:
    """The contents of each ``\\boxed{…}``, braces balanced; an unclosed one runs to the end."""
    contents = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        position = start
        while position < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            position += 1
        contents.append(text[start : position - 1] if depth == 0 else text[start:])
    return contents


def clean_label(text: str) -> str:
    """A label as one line any receiver takes (a DICOM LO, an HL7 component): control characters and
    lone surrogates dropped, white space collapsed, a backslash (DICOM's value separator) made "/",
    quotes and dots trimmed, cut to :data:`MAX_LABEL_CHARS`."""
    text = _NOT_LABEL.sub(" ", str(text)).replace("\\", "/")
    return " ".join(text.split()).strip(" .'\"")[:MAX_LABEL_CHARS]


def _labels(text: str) -> tuple[str, ...]:
    contents = _boxed_contents(text)
    if not contents:
        return ()
    answer = _TEXT_WRAPPER.sub(r"\1", contents[-1])
    labels: list[str] = []
    for part in _ANSWER_SEPARATORS.split(answer):
        label = clean_label(part)
        if label and label.lower() not in {existing.lower() for existing in labels}:
            labels.append(label)
    return tuple(labels)


def _load(candidate: str) -> object | None:
    """JSON, else a Python literal (single quotes); None when neither reads it."""
    candidate = candidate.strip()
    if not candidate or len(candidate) > 100_000:
        return None
    try:
        return json.loads(candidate)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the interpreter's stack
        pass
    try:
        return ast.literal_eval(candidate)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def _objects(value: object, depth: int = 0) -> Iterator[dict]:
    """Every mapping holding a ``bbox_2d``, at any nesting (lists, wrappers)."""
    if depth > 8:
        return
    if isinstance(value, dict):
        if "bbox_2d" in value:
            yield value
            return
        for child in value.values():
            yield from _objects(child, depth + 1)
    elif isinstance(value, list | tuple):
        for child in value:
            yield from _objects(child, depth + 1)


def _box(obj: dict, warnings: list[str]) -> ModelBox | None:
    coordinates = obj.get("bbox_2d")
    if not isinstance(coordinates, list | tuple) or len(coordinates) != 4:
        warnings.append("a box without four coordinates was ignored")
        return None
    try:
        x1, y1, x2, y2 = (float(c) for c in coordinates)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float
        warnings.append("a box with non-numeric coordinates was ignored")
        return None
    if not all(math.isfinite(c) for c in (x1, y1, x2, y2)):
        warnings.append("a box with non-finite coordinates was ignored")
        return None
    label = clean_label(obj.get("label", DEFAULT_BOX_LABEL)) or DEFAULT_BOX_LABEL
    index = obj.get("image_index", obj.get("image", 0))
    index = index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else 0
    return ModelBox(label, min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2), index)


def _fragment_objects(fragment: str, warnings: list[str]) -> list[dict]:
    """The box objects of one fragment (a fenced block, a flat object); none, with a warning, when
    reading it fails in any way: one bad fragment loses itself, never the rest of the answer."""
    try:
        loaded = _load(fragment)
        return list(_objects(loaded)) if loaded is not None else []
    except Exception as exc:
        warnings.append(f"a box block could not be read ({type(exc).__name__})")
        return []


def _one_box(obj: dict, warnings: list[str]) -> ModelBox | None:
    try:
        return _box(obj, warnings)
    except Exception as exc:  # a box the checks above did not foresee: that box only is lost
        warnings.append(f"a box could not be read ({type(exc).__name__})")
        return None


def _boxes(text: str, warnings: list[str]) -> tuple[ModelBox, ...]:
    objects = [obj for m in _FENCE.finditer(text) for obj in _fragment_objects(m.group(1), warnings)]
    if not objects and "bbox_2d" in text:
        # Unfenced, truncated or otherwise broken JSON: salvage each flat object on its own.
        objects = [obj for m in _FLAT_OBJECT.finditer(text) for obj in _fragment_objects(m.group(0), warnings)]
        if objects:
            warnings.append("boxes were recovered from malformed JSON")
    boxes = [box for box in (_one_box(obj, warnings) for obj in objects) if box is not None]
    if len(boxes) > MAX_BOXES:
        warnings.append(f"{len(boxes)} boxes given; the first {MAX_BOXES} kept")
    return tuple(dict.fromkeys(boxes))[:MAX_BOXES]


def _part(name: str, read: Callable[[], T], fallback: T, warnings: list[str]) -> T:
    """One part of the answer (reasoning, answer, boxes), read on its own: a parser failure in one part
    never loses the others."""
    try:
        return read()
    except Exception as exc:
        warnings.append(f"parser error in the {name}: {type(exc).__name__}")
        return fallback


def parse_output(text: object) -> ParsedOutput:
    """Read a model response. Never raises; the raw text is kept verbatim."""
    raw = text if isinstance(text, str) else ("" if text is None else str(text))
    searched = raw[:MAX_PARSED_CHARS]
    warnings: list[str] = []
    if len(raw) > MAX_PARSED_CHARS:
        warnings.append(f"only the first {MAX_PARSED_CHARS} characters were read")
    reasoning = _part("reasoning", lambda: _reasoning(searched), searched.strip(), warnings)
    no_labels: tuple[str, ...] = ()
    no_boxes: tuple[ModelBox, ...] = ()
    labels = _part("answer", lambda: _labels(searched), no_labels, warnings)
    boxes = _part("boxes", lambda: _boxes(searched, warnings), no_boxes, warnings)
    if not labels:
        warnings.append("no \\boxed{} answer")
    return ParsedOutput(reasoning, labels, boxes, raw, tuple(warnings))


def locate(parsed: ParsedOutput, geometries: Sequence[Geometry]) -> Findings:
    """Map the parsed boxes onto source pixels; boxes off the image or without area are dropped."""
    warnings = list(parsed.warnings)
    located = []
    for box in parsed.boxes:
        if box.image_index >= len(geometries):
            warnings.append(f"box '{box.label}' names image {box.image_index}, which was not sent")
            continue
        source = geometries[box.image_index].box_to_source(box.x1, box.y1, box.x2, box.y2)
        if source is None:
            warnings.append(f"box '{box.label}' lies outside the image or has no area")
            continue
        located.append(LocatedBox(box.label, box, source))
    return Findings(parsed.reasoning, parsed.labels, tuple(located), parsed.raw_text, tuple(warnings))
