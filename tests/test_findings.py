"""The output parser over realistic and broken model outputs: total, and exact where it can be."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.findings import MAX_BOXES, ModelBox, locate, parse_output
from node.imaging.geometry import FrameRef, Geometry

WELL_FORMED = """<think>
The right lower lobe shows a dense opacity with air bronchograms. The costophrenic angle is blunted.
</think>
```json
[{"bbox_2d": [300, 280, 420, 390], "label": "consolidation"},
 {"bbox_2d": [380, 400, 470, 470], "label": "pleural effusion"}]
```
\\boxed{Pneumonia, Pleural Effusion}"""


def test_well_formed_output() -> None:
    parsed = parse_output(WELL_FORMED)
    assert parsed.reasoning.startswith("The right lower lobe")
    assert parsed.labels == ("Pneumonia", "Pleural Effusion")
    assert parsed.boxes == (
        ModelBox("consolidation", 300, 280, 420, 390),
        ModelBox("pleural effusion", 380, 400, 470, 470),
    )
    assert parsed.raw_text == WELL_FORMED
    assert parsed.warnings == ()


@pytest.mark.parametrize(
    ("text", "labels", "boxes"),
    [
        # no think block: the prose before the boxes is the reasoning
        ('Opacity at the left apex.\n```json\n{"bbox_2d": [1, 2, 30, 40], "label": "mass"}\n```\n\\boxed{Mass}',
         ("Mass",), [ModelBox("mass", 1, 2, 30, 40)]),
        # a wrapper object
        ('```json\n{"objects_of_interest": [{"bbox_2d": [5, 5, 50, 50], "label": "nodule"}]}\n```\\boxed{Nodule}',
         ("Nodule",), [ModelBox("nodule", 5, 5, 50, 50)]),
        # single quotes, no fence language
        ("```\n[{'bbox_2d': [10, 20, 110, 120], 'label': 'cardiomegaly'}]\n```\n\\boxed{Cardiomegaly}",
         ("Cardiomegaly",), [ModelBox("cardiomegaly", 10, 20, 110, 120)]),
        # no fence at all
        ('I see [{"bbox_2d": [10, 10, 20, 20], "label": "a"}] here. \\boxed{A and B & C}',
         ("A", "B", "C"), [ModelBox("a", 10, 10, 20, 20)]),
        # truncated JSON: the complete objects are recovered
        ('```json\n[{"bbox_2d": [1, 1, 9, 9], "label": "x"}, {"bbox_2d": [3, 3, 7', (), [ModelBox("x", 1, 1, 9, 9)]),
        # nested objects and swapped corners
        ('```json\n{"result": {"findings": [{"bbox_2d": [90, 80, 10, 20], "label": "y"}]}}\n```\\boxed{Y}',
         ("Y",), [ModelBox("y", 10, 20, 90, 80)]),
        # \text{} inside the answer, duplicate labels, odd spacing
        ("\\boxed{\\text{Atelectasis},  atelectasis and   Edema}", ("Atelectasis", "Edema"), []),
        # nested braces in the answer
        ("\\boxed{Normal {no acute findings}}", ("Normal {no acute findings}",), []),
    ],
)
def test_variants(text: str, labels: tuple[str, ...], boxes: list[ModelBox]) -> None:
    parsed = parse_output(text)
    assert parsed.labels == labels
    assert list(parsed.boxes) == boxes
    assert parsed.raw_text == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The image is normal.",
        '```json\n[{"bbox_2d": [NaN, 1, 2, 3], "label": "nan"}]\n```',
        '```json\n[{"bbox_2d": [1e999, 1, 2, 3]}]\n```',
        '```json\n[{"bbox_2d": [1, 2, 3]}, {"bbox_2d": "1,2,3,4"}, {"bbox_2d": [1, "a", 3, 4]}]\n```',
        "<think>never closed ... and no answer",
        "\\boxed{unclosed",
        "```json\n" + "[" * 5000 + "]" * 5000 + "\n```",
        "{" * 10_000 + "bbox_2d" + "}" * 10_000,
        None,
        12345,
    ],
)
def test_broken_outputs_never_raise(text: object) -> None:
    parsed = parse_output(text)
    assert all(isinstance(box, ModelBox) for box in parsed.boxes)
    assert parsed.raw_text == ("" if text is None else str(text))
    for box in parsed.boxes:
        assert all(abs(c) < float("inf") for c in (box.x1, box.y1, box.x2, box.y2))


def test_nan_boxes_are_dropped_with_a_warning() -> None:
    parsed = parse_output('```json\n[{"bbox_2d": [NaN, 1, 2, 3]}, {"bbox_2d": [1, 1, 5, 5]}]\n```\\boxed{X}')
    assert parsed.boxes == (ModelBox("finding", 1, 1, 5, 5),)
    assert any("non-finite" in warning for warning in parsed.warnings)


def test_hundred_kilobytes_of_garbage() -> None:
    rng = random.Random(7)
    garbage = "".join(rng.choice("{}[]\"'`\\<>/ abcdefghij0123456789,.:bbox_2d\n") for _ in range(100_000))
    parsed = parse_output(garbage)
    assert parsed.raw_text == garbage
    assert len(parsed.boxes) <= MAX_BOXES


def test_too_many_boxes_are_capped() -> None:
    many = ",".join(f'{{"bbox_2d": [{i}, 0, {i + 5}, 5]}}' for i in range(200))
    parsed = parse_output(f"```json\n[{many}]\n```")
    assert len(parsed.boxes) == MAX_BOXES
    assert any("first 64" in warning for warning in parsed.warnings)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=3000))
def test_any_text_parses(text: str) -> None:
    parsed = parse_output(text)
    assert parsed.raw_text == text


def test_locate_maps_boxes_to_source_pixels_and_drops_the_unusable() -> None:
    frame = FrameRef("1.2.3.4", 1, 1024, 1024)
    geometry = Geometry.single(frame, (980, 980))
    text = ('```json\n[{"bbox_2d": [252, 504, 504, 756], "label": "lesion"},'
            ' {"bbox_2d": [2000, 2000, 2100, 2100], "label": "outside"},'
            ' {"bbox_2d": [10, 10, 20, 20], "label": "elsewhere", "image_index": 3}]\n```\\boxed{Lesion}')
    findings = locate(parse_output(text), [geometry])
    [box] = findings.boxes
    assert (geometry.width, geometry.height) == (980, 980)
    scale = 1024 / 980
    assert box.source.frame == frame
    assert (box.source.column_min, box.source.row_min) == pytest.approx((252 * scale, 504 * scale))
    assert (box.source.column_max, box.source.row_max) == pytest.approx((504 * scale, 756 * scale))
    assert any("outside" in warning for warning in findings.warnings)
    assert any("image 3" in warning for warning in findings.warnings)
