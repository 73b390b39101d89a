"""The question the node asks QoQ-Med, worded and laid out exactly as its training asked.

Training (DDVD233/QoQ_Med ``verl/utils/dataset.py`` ``_build_messages``) took a data set's question
— CLIMB's ``'<image>\\nAbove is a chest X-ray image of a patient. What is the diagnosis ...?
Answer with one or multiple phrases from the following:\\n<label>\\n<label>...'`` — rendered it
through ``examples/format_prompt/medical_format.jinja`` (``{{ content | trim }}`` and the format
instruction after one space), and split the result on ``<image>``: an image item at each marker,
the text between them as text items, and for an ECG a time-series item after the text. No system
prompt of its own: the chat template's default.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Where an image goes in the prompt text (split out into image items by :func:`node.engine.chat.user_turn`).
IMAGE_MARKER = "<image>"

#: ``examples/format_prompt/medical_format.jinja`` after its ``{{ content | trim }}``, verbatim
#: (its typo "list od bounding box" included: it is what the model was trained on).
FORMAT_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer.\n"
    "Before analyzing medical images, you must identify and outline all objects of interest that are relevant to "
    'diagnosis in json format, with list od bounding box in a key called "bbox_2d" with the format [x1, y1, x2, y2]. '
    "The json should be wrapped in ```json ... ``` tags. The reasoning process MUST BE enclosed within <think> "
    "</think> tags. The final answer MUST BE put in \\boxed{}."
)


#: Characters of question text (clinical context included) training gave: longer text lost its middle.
TEXT_BUDGET = 5000
MIDDLE_CUT = " ... "


def question_text(question: str, labels: Sequence[str] = (), options_prefix: str = "\n",
                  option_marker: str = "") -> str:
    """A closed-set question as the training data sets wrote it: the question, then the options one
    per line (``options_prefix`` before the first, ``option_marker`` before each)."""
    if not labels:
        return question
    return question + options_prefix + "\n".join(f"{option_marker}{label}" for label in labels)


def clip_middle(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, its middle replaced by " ... " when longer (training's
    clipping of clinical text: qoq_med3 ``scripts/consolidate_mimic_qa.py``)."""
    if len(text) <= limit:
        return text
    if limit <= len(MIDDLE_CUT):
        return ""
    head = (limit - len(MIDDLE_CUT)) // 2
    tail = limit - len(MIDDLE_CUT) - head
    return text[:head] + MIDDLE_CUT + (text[-tail:] if tail else "")


def build_prompt(question: str, image_count: int, context: str = "") -> str:
    """The user turn's text: one image marker per image, each on its own line, then the patient's
    clinical ``context`` (when any) on its own lines, clipped with its middle removed so that context
    and question stay within the trained :data:`TEXT_BUDGET`, then the question, trimmed, then the
    format instruction after one space (``medical_format.jinja``)."""
    if context.strip():
        context = clip_middle(context.strip(), max(0, TEXT_BUDGET - len(question) - 1))
    text = f"{context}\n{question}" if context else question
    content = f"{IMAGE_MARKER}\n" * image_count + text
    return f"{content.strip()} {FORMAT_INSTRUCTION}"
