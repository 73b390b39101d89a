"""The question the node asks QoQ-Med: reasoning, evidence boxes and a boxed answer, explicitly.

The wording follows the model's training questions (a clinical question, the candidate labels
of the domain where it has a known label set) and asks for the three output parts that
:mod:`node.findings` reads.
"""

from __future__ import annotations

from collections.abc import Sequence

NO_FINDING = "No finding"


def build_prompt(
    question: str,
    candidate_labels: Sequence[str] = (),
    ask_boxes: bool = True,
    image_count: int = 1,
) -> str:
    """The user-turn text that accompanies the study's images."""
    images = "the image" if image_count == 1 else f"the {image_count} images (in the order given)"
    lines = [f"{question.strip()}"]
    if candidate_labels:
        options = ", ".join(candidate_labels)
        lines.append(f"Choose every label that applies from: {options}. If none applies, answer \"{NO_FINDING}\".")
    lines.append("First reason step by step inside <think> </think>.")
    if ask_boxes:
        index = "" if image_count == 1 else ', "image_index": <0-based image number>'
        lines.append(
            "Then give the evidence for each finding as a JSON list in a ```json block: "
            f'[{{"bbox_2d": [x1, y1, x2, y2], "label": "<finding>"{index}}}], '
            f"with coordinates in pixels of {images} as you see it."
        )
    lines.append('Finally give the answer as \\boxed{...}, separating several labels with ", ".')
    return "\n".join(lines)
