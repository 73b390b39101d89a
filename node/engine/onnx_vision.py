"""The Qwen2.5-VL vision tower on ONNX Runtime: an option of the ``transformers`` backend.

The tower's grid-dependent bookkeeping (rotary angles, the window order, which patches attend to
which) is data-dependent Python that no exporter can make dynamic, so it stays in torch and enters
the graph as inputs: patch embedding, the 32 window/full attention blocks (attention as a masked
SDPA over the block-diagonal mask of each block kind) and the patch merger are exported once per
checkpoint, with the sequence length dynamic. ONNX Runtime runs it with the TensorRT execution
provider (its engine cache next to the ONNX file) where present, else CUDA, else the CPU.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
from transformers.vision_utils import get_vision_attention_seqlens, get_vision_position_ids, get_vision_window_index

from node.engine.errors import EngineLoadError

INPUTS = ("patches", "window_index", "reverse_index", "cos", "sin", "full_mask", "window_mask")
PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
OPSET = 18
TOWER_FILE = "tower.onnx"


def _segment_mask(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """[length, length] True where two positions lie in the same segment of ``cu_seqlens``."""
    segment = torch.bucketize(torch.arange(length, device=cu_seqlens.device), cu_seqlens[1:], right=True)
    return segment[:, None] == segment[None, :]


def tower_inputs(visual: nn.Module, patches: torch.Tensor, grid_thw: torch.Tensor) -> dict[str, torch.Tensor]:
    """The exported graph's inputs for ``patches`` of images with grids ``grid_thw``."""
    config = visual.config
    position_ids = get_vision_position_ids(grid_thw, visual.spatial_merge_size)
    cu_seqlens, _ = get_vision_attention_seqlens(grid_thw, config)
    window_index, cu_window_seqlens = get_vision_window_index(
        grid_thw, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
        patch_size=visual.patch_size)
    length = patches.shape[0]
    cos, sin = visual.rotary_pos_emb(patches, position_ids)
    unit = visual.spatial_merge_unit
    order = (window_index[:, None] * unit + torch.arange(unit, device=window_index.device)).reshape(-1)
    return {
        "patches": patches,
        "window_index": window_index,
        "reverse_index": torch.argsort(window_index),
        "cos": cos[order].float(),
        "sin": sin[order].float(),
        "full_mask": _segment_mask(cu_seqlens.to(torch.long), length),
        "window_mask": _segment_mask(cu_window_seqlens.to(torch.long), length),
    }


class ExportableTower(nn.Module):
    """The tower's computation with the bookkeeping as inputs (what is exported)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, patches, window_index, reverse_index, cos, sin, full_mask, window_mask) -> torch.Tensor:
        """Image embeddings, one row per merged patch, in the images' order."""
        visual = self.visual
        hidden = visual.patch_embed(patches)
        length = hidden.shape[0]
        unit = visual.spatial_merge_unit
        hidden = hidden.reshape(length // unit, unit, -1)[window_index].reshape(length, -1)
        for index, block in enumerate(visual.blocks):
            mask = full_mask if index in visual.fullatt_block_indexes else window_mask
            attention = block.attn
            query, key, value = attention.qkv(block.norm1(hidden)).reshape(
                length, 3, attention.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            query, key = apply_rotary_pos_emb_vision(query, key, cos, sin)
            output = functional.scaled_dot_product_attention(
                query.transpose(0, 1)[None], key.transpose(0, 1)[None], value.transpose(0, 1)[None], attn_mask=mask)
            hidden = hidden + attention.proj(output[0].transpose(0, 1).reshape(length, -1))
            hidden = hidden + block.mlp(block.norm2(hidden))
        return visual.merger(hidden)[reverse_index]


def export_tower(visual: nn.Module, directory: Path) -> Path:
    """Export the tower (in float32, on the CPU) into ``directory`` (``tower.onnx`` and, for a large
    tower, its weights beside it) with torch.export, the number of merged patches dynamic. The
    directory appears whole or not at all."""
    tower = ExportableTower(copy.deepcopy(visual).float().cpu()).eval()
    grid = torch.tensor([[1, 16, 16]])  # any grid: the graph is the same for every one
    channels = visual.patch_embed.in_channels * visual.patch_embed.temporal_patch_size * visual.patch_size ** 2
    sample = tower_inputs(tower.visual, torch.zeros(int(grid.prod()), channels), grid)
    units = torch.export.Dim("units", min=4, max=65536)
    patches = visual.spatial_merge_unit * units
    shapes = {"patches": {0: patches}, "window_index": {0: units}, "reverse_index": {0: units},
              "cos": {0: patches}, "sin": {0: patches}, "full_mask": {0: patches, 1: patches},
              "window_mask": {0: patches, 1: patches}}
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with torch.inference_mode():
        torch.onnx.export(tower, tuple(sample[name] for name in INPUTS), partial / TOWER_FILE,
                          input_names=list(INPUTS), output_names=["embeddings"], dynamic_shapes=shapes,
                          opset_version=OPSET, dynamo=True, verbose=False)
    partial.rename(directory)
    return directory / TOWER_FILE


def session(path: Path, cache_dir: Path):
    """An ONNX Runtime session on the best provider present (TensorRT with its engine cache, CUDA, CPU)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineLoadError(f"engine.transformers.vision onnx needs onnxruntime (pip install onnxruntime-gpu): "
                              f"{exc}") from exc
    available = set(onnxruntime.get_available_providers())
    providers: list[Any] = []
    for name in PROVIDERS:
        if name not in available:
            continue
        if name == "TensorrtExecutionProvider":
            providers.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
                                     "trt_fp16_enable": True}))
        else:
            providers.append(name)
    return onnxruntime.InferenceSession(str(path), providers=providers)


class OnnxVisionTower(nn.Module):
    """Stands in for ``model.model.visual``: the bookkeeping in torch, the tower on ONNX Runtime."""

    def __init__(self, visual: nn.Module, onnx_path: Path, cache_dir: Path) -> None:
        super().__init__()
        self.torch_tower = visual  # kept for its configuration and rotary table (and as the reference)
        self.spatial_merge_size = visual.spatial_merge_size
        self._session = session(onnx_path, cache_dir)
        self.providers = self._session.get_providers()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model hands pixel values in (the torch tower's)."""
        return self.torch_tower.dtype

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor, **_: Any) -> BaseModelOutputWithPooling:
        """Image embeddings as the torch tower gives them (``pooler_output``). Images run one at a
        time: the graph's attention masks are square in the patches it is given, so a batch of images
        in one run would cost memory quadratic in all their patches together."""
        outputs = []
        for patches, grid in zip(torch.split(pixel_values, grid_thw.prod(-1).tolist()), grid_thw, strict=True):
            inputs = tower_inputs(self.torch_tower, patches, grid[None])
            feed = {name: (value.float() if value.is_floating_point() else value).cpu().numpy()
                    for name, value in inputs.items()}
            [embeddings] = self._session.run(["embeddings"], feed)
            outputs.append(torch.from_numpy(embeddings))
        output = torch.cat(outputs).to(pixel_values.device, self.torch_tower.dtype)
        return BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=output)


def attach_onnx_tower(model: nn.Module, cache_root: Path, fingerprint: str) -> OnnxVisionTower:
    """Export the model's vision tower once (cached by checkpoint fingerprint) and swap it in."""
    visual = model.model.visual
    directory = cache_root / f"vision-{fingerprint}"
    path = directory / TOWER_FILE
    if not path.is_file():
        export_tower(visual, directory)
    tower = OnnxVisionTower(visual, path, directory)
    model.model.visual = tower
    return tower
