"""Where the engines keep what they build from a checkpoint: the FP8 checkpoint of ``qoq-node engine
prepare`` (keyed by model, GPU and library version) and the ONNX vision tower (keyed by model).

The cache lies next to the model (``<model>.qoq-node-cache/``) unless ``engine.cache_dir`` says
otherwise (a read-only model volume). A prepared checkpoint is a directory named after what it was
built from and holds a ``manifest.json`` written last, so a half-built entry (a crash, a full disk)
is never taken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from node.config import EngineConfig
from node.engine.errors import EngineLoadError

MANIFEST = "manifest.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")


def cache_root(model: Path, configured: Path | None) -> Path:
    """The cache directory for the checkpoint in ``model``: ``configured``, or next to the model."""
    return configured if configured is not None else model.parent / f"{model.name}.qoq-node-cache"


def model_fingerprint(model_dir: Path) -> str:
    """A digest of the checkpoint's files (names, sizes and config.json): a changed model is a new key."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).iterdir() if p.suffix in WEIGHT_SUFFIXES):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
    digest.update((Path(model_dir) / "config.json").read_bytes())
    return digest.hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def cache_key(model_dir: Path, quantization: str, library_version: str, gpu: str) -> str:
    """The entry's directory name: precision, GPU, TensorRT-LLM version and the model's fingerprint."""
    return f"{quantization}-{_slug(gpu)}-trtllm{_slug(library_version)}-{model_fingerprint(model_dir)}"


def cache_entry(config: EngineConfig, library_version: str, gpu: str) -> Path:
    """The entry ``config`` needs on this GPU with this library version."""
    assert config.model is not None
    key = cache_key(config.model, config.tensorrt_llm.quantization, library_version, gpu)
    return cache_root(config.model, config.cache_dir) / key


def is_complete(entry: Path) -> bool:
    """Whether ``entry`` was finished (its manifest is written last)."""
    return (entry / MANIFEST).is_file()


def write_manifest(entry: Path, facts: dict[str, str]) -> None:
    """Mark ``entry`` finished, with what it was built from."""
    (entry / MANIFEST).write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")


def prepared_checkpoint(config: EngineConfig, library_version: str, gpu: str) -> Path:
    """The prepared checkpoint for ``config``; :class:`EngineLoadError` naming the command when missing."""
    entry = cache_entry(config, library_version, gpu)
    if not is_complete(entry):
        raise EngineLoadError(f"no {config.tensorrt_llm.quantization} checkpoint prepared for this model, GPU ({gpu}) "
                              f"and TensorRT-LLM {library_version} (looked in {entry}); "
                              "run 'qoq-node engine prepare --config FILE' before starting the node")
    return entry
