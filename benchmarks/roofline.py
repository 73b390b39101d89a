"""The memory-bandwidth roofline of decoding: the bytes one generated token reads, from the checkpoint.

A decoded token reads every weight of the language model's layers and its output head, and the KV cache
of the context so far. It does not read the vision tower (run once per image, at prefill) nor the input
embedding table (one row per token) — unless the output head is that table (tied embeddings). For
QoQ-Med-VL-7B: 16.58 GB of safetensors, of which the tower is 1.35 GB and the embedding table 1.09 GB,
so about 14.14 GB per token plus ~57 KB of KV cache per token of context.

Reads the safetensors headers only (no torch): usable in the benchmark's parent process.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def tensor_bytes(model_dir: Path) -> dict[str, int]:
    """Every tensor of the checkpoint's ``*.safetensors`` files and its size in bytes, from their headers."""
    sizes: dict[str, int] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header: dict[str, Any] = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                begin, end = entry["data_offsets"]
                sizes[name] = end - begin
    return sizes


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, **config.get("text_config", {})}


def _read_per_token(name: str, tied: bool) -> bool:
    """Whether decoding one token reads the whole tensor ``name``."""
    if ".visual." in f".{name}" or name.startswith("visual"):
        return False
    return tied or "embed_tokens" not in name


def decode_bytes(model_dir: Path, context_tokens: int, kv_dtype_bytes: int = 2) -> dict[str, int]:
    """Bytes one decoded token of the checkpoint in ``model_dir`` reads (see :func:`decode_bytes_of`)."""
    config = json.loads((model_dir / "config.json").read_text())
    return decode_bytes_of(tensor_bytes(model_dir), config, context_tokens, kv_dtype_bytes)


def decode_bytes_of(sizes: dict[str, int], config: dict[str, Any], context_tokens: int,
                    kv_dtype_bytes: int = 2) -> dict[str, int]:
    """Bytes one decoded token reads at ``context_tokens`` of context, for a model of ``config`` (its
    config.json) whose tensors have ``sizes``: the weights it reads, the KV cache, and their sum; with the
    checkpoint's total for comparison."""
    config = _text_config(config)
    tied = bool(config.get("tie_word_embeddings", False))
    weights = sum(size for name, size in sizes.items() if _read_per_token(name, tied))
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    kv_per_token = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * kv_dtype_bytes
    return {"checkpoint_bytes": sum(sizes.values()), "weights_read_bytes": weights,
            "kv_bytes_per_context_token": kv_per_token, "kv_bytes": kv_per_token * context_tokens,
            "bytes_per_token": weights + kv_per_token * context_tokens}


def roofline_tokens_per_s(bandwidth_bytes_per_s: float, model_dir: Path, context_tokens: int) -> float:
    """The fastest batch-1 decode the memory bandwidth allows at ``context_tokens`` of context."""
    return bandwidth_bytes_per_s / decode_bytes(model_dir, context_tokens)["bytes_per_token"]


def batch1_against_roofline(rows: list[dict[str, Any]], bandwidth_bytes_per_s: float | None,
                            model_dir: Path) -> dict[str, Any] | None:
    """The batch-1 row's decode speed against the roofline at its mean decode context (the prompt and half
    the new tokens), or ``None`` without a batch-1 speed or a known bandwidth."""
    row = next((row for row in rows if row["concurrency"] == 1), None)
    if row is None or not row.get("decode_tokens_per_s_per_stream") or not bandwidth_bytes_per_s:
        return None
    context = row["prompt_tokens"] + row["new_tokens"] // 2
    bound = roofline_tokens_per_s(bandwidth_bytes_per_s, model_dir, context)
    return {"context_tokens": context, "roofline_tokens_per_s": round(bound, 1),
            "fraction": round(row["decode_tokens_per_s_per_stream"] / bound, 3)}
