"""Tiny, randomly initialised checkpoints of each QoQ-Med family, built offline.

``qwen2.5-vl`` (QoQ-Med-VL-7B/32B), ``qwen3-vl`` (QoQ-Med3-VL-8B) and ``omni`` (QoQ-Med-Omni-7B: a
Qwen2.5-VL body with an ECG encoder, its modelling code shipped in the directory and loaded with
``trust_remote_code`` as the real checkpoint's is). Same architectures, processors (with their base
models' own rounding bounds), chat templates and special tokens as the real ones, with a small
locally trained tokenizer and random weights: loadable by exactly the production code path, a few MB,
byte-identical for the same seed and library versions. Their output is meaningless text; they are
what tests and the demo use, since the real weights cannot be downloaded here. Outputs of a model
built here say so in their identity.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from node.engine.extras import require_transformers
from node.model.profiles import PROFILES, Family, ModelProfile
from node.model.prompt import build_prompt, question_text

if TYPE_CHECKING:
    from transformers import (
        PreTrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerFast,
        ProcessorMixin,
        Qwen2VLImageProcessor,
    )

    #: What a family's builder gives: its processor, its model's configuration and the model's class.
    Parts = tuple[ProcessorMixin, PreTrainedConfig, type[PreTrainedModel]]

TINY_MODEL_NAME = "qoq-node-tiny-random"
#: Written into the config so every output of this model is recognisable as a test model.
TINY_MARKER = "qoq_node_tiny_random_test_model"

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|ts_start|>",
    "<|ts_pad|>",
    "<|ts_end|>",
]

_IMAGE_ITEM = (
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
)
_TIME_SERIES_ITEM = "{% elif content['type'] == 'time-series' %}<|ts_start|><|ts_pad|><|ts_end|>"


def _chat_template(default_system: bool, time_series: bool) -> str:
    """The family's chat template: Qwen2.5-VL's adds its default system turn, Qwen3-VL's adds none;
    Omni's renders a time-series item as its placeholder."""
    system = ("{% if loop.first and message['role'] != 'system' %}"
              "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}") if default_system else ""
    return (
        "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
        "{% for message in messages %}" + system + "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
        "{% else %}{% for content in message['content'] %}" + _IMAGE_ITEM
        + (_TIME_SERIES_ITEM if time_series else "")
        + "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def _corpus() -> list[str]:
    """Text the tokenizer learns from: the node's prompts and the output format."""
    prompt = build_prompt(question_text("Above is a chest X-ray image of a patient. What is the diagnosis?",
                                        ["Pneumonia", "Pleural Effusion"]), 1)
    return [
        prompt,
        '<think>The lungs are clear.</think>\n```json\n[{"bbox_2d": [10, 20, 300, 400], "label": "opacity"}]\n```',
        "\\boxed{No finding, Cardiomegaly and Edema & Nodule}",
        "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`",
    ] * 4


class _TokenIds(TypedDict):
    """The placeholder tokens' ids, as the families' configurations name them."""

    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int


def _tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # its bar left blank lines on stdout
    )
    core.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",  # noqa: S106 (a token, not a password)
        pad_token="<|endoftext|>",  # noqa: S106
        additional_special_tokens=SPECIAL_TOKENS[1:],
        padding_side="left",
    )


def _token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of one of :data:`SPECIAL_TOKENS`."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(token_id, int), token  # one token in, one id out
    return token_id


def _text_config(tokenizer: PreTrainedTokenizerFast, mrope_section: list[int]) -> dict[str, Any]:
    """A two-layer language model (head dim 16) with the tokenizer's special tokens."""
    token_id = functools.partial(_token_id, tokenizer)
    assert sum(mrope_section) * 2 == 16
    return {
        "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 8192,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope_section},
        "bos_token_id": token_id("<|endoftext|>"), "eos_token_id": token_id("<|im_end|>"),
        "pad_token_id": token_id("<|endoftext|>"),
    }


def _token_ids(tokenizer: PreTrainedTokenizerFast) -> _TokenIds:
    token_id = functools.partial(_token_id, tokenizer)
    return {"image_token_id": token_id("<|image_pad|>"), "video_token_id": token_id("<|video_pad|>"),
            "vision_start_token_id": token_id("<|vision_start|>"), "vision_end_token_id": token_id("<|vision_end|>")}


def _vision_config(profile: ModelProfile, **family_keys: Any) -> dict[str, Any]:
    """A two-block vision tower (width 32) with the family's patch and merge sizes, and its own keys."""
    return {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
            "patch_size": profile.patch_size, "spatial_merge_size": profile.merge_size, "temporal_patch_size": 2,
            **family_keys}


def _qwen25_parts(tokenizer: PreTrainedTokenizerFast, family: Family) -> Parts:
    """Processor and model of a tiny Qwen2.5-VL (or, for Omni, its Qwen2.5-VL body and own classes)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    profile = PROFILES[family]
    processor_class: type[Qwen2_5_VLProcessor] = Qwen2_5_VLProcessor
    config_class: type[Qwen2_5_VLConfig] = Qwen2_5_VLConfig
    model_class: type[Qwen2_5_VLForConditionalGeneration] = Qwen2_5_VLForConditionalGeneration
    extra: dict[str, Any] = {}
    if family == "omni":
        from node.engine.omni_remote.configuration_qoq_omni import QoQOmniConfig
        from node.engine.omni_remote.modeling_qoq_omni import QoQOmniForConditionalGeneration
        from node.engine.omni_remote.processing_qoq_omni import QoQOmniProcessor

        processor_class, config_class, model_class = QoQOmniProcessor, QoQOmniConfig, QoQOmniForConditionalGeneration
        extra["time_series_token_id"] = _token_id(tokenizer, "<|ts_pad|>")
    processor = processor_class(
        image_processor=_image_processor(profile), tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
        chat_template=_chat_template(default_system=True, time_series=family == "omni"))
    config = config_class(
        text_config=_text_config(tokenizer, [2, 3, 3]),
        vision_config=_vision_config(profile, fullatt_block_indexes=[1], window_size=112),
        **_token_ids(tokenizer), **extra)
    return processor, config, model_class


def _qwen3_parts(tokenizer: PreTrainedTokenizerFast) -> Parts:
    """Processor and model of a tiny Qwen3-VL."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    profile = PROFILES["qwen3-vl"]
    processor = Qwen3VLProcessor(
        image_processor=_image_processor(profile), tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=profile.patch_size),
        chat_template=_chat_template(default_system=False, time_series=False))
    config = Qwen3VLConfig(
        text_config=_text_config(tokenizer, [4, 2, 2]),
        vision_config=_vision_config(profile, num_position_embeddings=64, deepstack_visual_indexes=[0]),
        **_token_ids(tokenizer))
    return processor, config, Qwen3VLForConditionalGeneration


def _image_processor(profile: ModelProfile) -> Qwen2VLImageProcessor:
    """The base model's image processor: its patch size and its own rounding bounds."""
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(
        size={"shortest_edge": profile.processor_min_pixels, "longest_edge": profile.processor_max_pixels},
        patch_size=profile.patch_size, merge_size=profile.merge_size, temporal_patch_size=2)


def _ship_own_code(directory: Path) -> None:
    """Copy Omni's modelling code into the checkpoint and point the auto classes at it."""
    source = Path(__file__).parent / "omni_remote"
    for name in ("configuration_qoq_omni.py", "modeling_qoq_omni.py", "processing_qoq_omni.py"):
        shutil.copyfile(source / name, directory / name)
    auto_maps = {
        "config.json": {"AutoConfig": "configuration_qoq_omni.QoQOmniConfig",
                        "AutoModel": "modeling_qoq_omni.QoQOmniForConditionalGeneration"},
        "processor_config.json": {"AutoProcessor": "processing_qoq_omni.QoQOmniProcessor"},
    }
    for file, auto_map in auto_maps.items():
        path = directory / file
        data = json.loads(path.read_text()) if path.is_file() else {}
        data["auto_map"] = auto_map
        if file == "processor_config.json":
            data["processor_class"] = "QoQOmniProcessor"
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' progress bars off (``model tiny`` printed "Writing model shards" bars), then as they were."""
    from transformers.utils import logging as transformers_logging

    were_disabled = transformers_logging.is_progress_bar_enabled() is False
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not were_disabled:
            transformers_logging.enable_progress_bar()


def build_tiny_checkpoint(directory: Path, family: Family = "qwen2.5-vl", seed: int = 0) -> Path:
    """Write a tiny checkpoint of ``family`` into ``directory`` and return it (needs the ``[transformers]``
    extra: :class:`~node.engine.errors.EngineLoadError` naming it when it is not installed)."""
    require_transformers("the tiny test model")
    import torch

    if family not in PROFILES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(PROFILES)}")
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    processor, config, model_class = _qwen3_parts(tokenizer) if family == "qwen3-vl" else _qwen25_parts(
        tokenizer, family)
    setattr(config, TINY_MARKER, True)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.eos_token_id = _token_id(tokenizer, "<|im_end|>")
    model.generation_config.pad_token_id = _token_id(tokenizer, "<|endoftext|>")
    with _no_progress_bars():
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
    if family == "omni":
        _ship_own_code(directory)
    return directory
