"""The Qwen2.5-VL vision tower on ONNX Runtime: an option of the ``transformers`` backend.

The tower's grid-dependent bookkeeping (rotary angles, the window order, where each window's
patches lie) is data-dependent Python that no exporter can make dynamic, so it stays in torch and
enters the graph as inputs: patch embedding, the 32 blocks (full attention over the image, or
attention within windows laid out padded as [windows, slots] with the padding masked) and the patch
merger are exported once per checkpoint, with patches and windows dynamic. One image per run.
ONNX Runtime runs it with the TensorRT execution
provider (its engine cache next to the ONNX file) where present, else CUDA, else the CPU.
"""

from __future__ import annotations

import copy
import itertools
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.nn import functional
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel as VisionTower,
)
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLVisionBlock,
    apply_rotary_pos_emb_vision,
)
from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

from node.engine.errors import EngineLoadError

if TYPE_CHECKING:
    import onnxruntime

INPUTS = ("patches", "window_index", "reverse_index", "cos", "sin", "window_gather", "window_valid", "window_scatter")
PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
OPSET = 18
TOWER_FILE = "tower.onnx"
#: The exported graph's layout; part of the cache key so a graph of an older layout is never reused.
GRAPH_LAYOUT = "padded-windows-1"


def window_layout(cu_window_seqlens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The windows of one image as a padded [windows, longest] layout of sequence positions: where each
    window's patches are (``window_gather``), which of those slots are real (``window_valid``), and
    where each sequence position lies in the flattened layout (``window_scatter``)."""
    bounds = [int(b) for b in torch.unique_consecutive(cu_window_seqlens.to(torch.long))]
    lengths = [end - start for start, end in itertools.pairwise(bounds)]
    longest = max(lengths)
    slots = torch.arange(longest)
    starts = torch.tensor(bounds[:-1])[:, None]
    valid = slots[None, :] < torch.tensor(lengths)[:, None]
    gather = torch.where(valid, starts + slots[None, :], torch.zeros_like(starts))
    scatter = (torch.arange(len(lengths))[:, None] * longest + slots[None, :])[valid]
    return {"window_gather": gather, "window_valid": valid, "window_scatter": scatter}


def tower_inputs(visual: VisionTower, patches: torch.Tensor, grid_thw: torch.Tensor) -> dict[str, torch.Tensor]:
    """The exported graph's inputs for the ``patches`` of one image whose grid is ``grid_thw`` ([1, 3])."""
    position_ids = get_vision_position_ids(grid_thw, visual.spatial_merge_size)
    window_index, cu_window_seqlens = get_vision_window_index(
        grid_thw, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
        patch_size=_patch_size(visual))
    cos, sin = visual.rotary_pos_emb(patches, position_ids)
    unit = visual.spatial_merge_unit
    order = (window_index[:, None] * unit + torch.arange(unit, device=window_index.device)).reshape(-1)
    layout = {name: value.to(patches.device) for name, value in window_layout(cu_window_seqlens.cpu()).items()}
    return {"patches": patches, "window_index": window_index, "reverse_index": torch.argsort(window_index),
            "cos": cos[order].float(), "sin": sin[order].float(), **layout}


def _patch_size(visual: VisionTower) -> int:
    """The side of the tower's square patches, in pixels (its patch embedding's kernel)."""
    return visual.patch_embed.proj.kernel_size[-1]


def _blocks(visual: VisionTower) -> list[Qwen2_5_VLVisionBlock]:
    """The tower's blocks, in order."""
    return cast("list[Qwen2_5_VLVisionBlock]", list(visual.blocks))  # a ModuleList does not type its items


def _attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """SDPA over [batch, positions, heads, dim] inputs (heads moved where SDPA wants them and back)."""
    output = functional.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=mask)
    return output.transpose(1, 2)


class ExportableTower(nn.Module):
    """The tower's computation for one image, the bookkeeping as inputs (what is exported): full
    attention blocks attend over the whole image, window blocks within padded windows."""

    def __init__(self, visual: VisionTower) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, patches: torch.Tensor, window_index: torch.Tensor, reverse_index: torch.Tensor,
                cos: torch.Tensor, sin: torch.Tensor, window_gather: torch.Tensor, window_valid: torch.Tensor,
                window_scatter: torch.Tensor) -> torch.Tensor:
        """Image embeddings, one row per merged patch."""
        visual = self.visual
        hidden = visual.patch_embed(patches)
        length = hidden.shape[0]
        unit = visual.spatial_merge_unit
        hidden = hidden.reshape(length // unit, unit, -1)[window_index].reshape(length, -1)
        key_mask = window_valid[:, None, None, :]  # [windows, 1, 1, slots]: padding is never attended to
        for index, block in enumerate(_blocks(visual)):
            attention = block.attn
            query, key, value = attention.qkv(block.norm1(hidden)).reshape(
                length, 3, attention.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            query, key = apply_rotary_pos_emb_vision(query, key, cos, sin)
            if index in visual.fullatt_block_indexes:
                output = _attention(query[None], key[None], value[None])[0]
            else:
                # [windows, slots, heads, dim]
                query, key, value = (tensor[window_gather] for tensor in (query, key, value))
                output = _attention(query, key, value, mask=key_mask)
                output = output.reshape(-1, *output.shape[2:])[window_scatter]
            hidden = hidden + attention.proj(output.reshape(length, -1))
            hidden = hidden + block.mlp(block.norm2(hidden))
        return visual.merger(hidden)[reverse_index]


def export_tower(visual: VisionTower, directory: Path) -> Path:
    """Export the tower (in float32, on the CPU) into ``directory`` (``tower.onnx`` and, for a large
    tower, its weights beside it) with torch.export, patches and windows dynamic. The directory
    appears whole or not at all."""
    tower = ExportableTower(copy.deepcopy(visual).float().cpu()).eval()
    grid = torch.tensor([[1, 34, 36]])  # an image with whole and partial windows: the graph is the same for all
    convolution = visual.patch_embed.proj  # channels × temporal patch × patch side²
    channels = convolution.in_channels * math.prod(convolution.kernel_size)
    sample = tower_inputs(tower.visual, torch.zeros(int(grid.prod()), channels), grid)
    units = torch.export.Dim("units", min=4, max=65536)
    patches = visual.spatial_merge_unit * units
    windows, slots = torch.export.Dim("windows", min=2, max=65536), torch.export.Dim("slots", min=2, max=4096)
    shapes = {"patches": {0: patches}, "window_index": {0: units}, "reverse_index": {0: units},
              "cos": {0: patches}, "sin": {0: patches}, "window_gather": {0: windows, 1: slots},
              "window_valid": {0: windows, 1: slots}, "window_scatter": {0: patches}}
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with torch.inference_mode():
        torch.onnx.export(tower, tuple(sample[name] for name in INPUTS), partial / TOWER_FILE,
                          input_names=list(INPUTS), output_names=["embeddings"], dynamic_shapes=shapes,
                          opset_version=OPSET, dynamo=True, verbose=False)
    partial.rename(directory)
    return directory / TOWER_FILE


def session(path: Path, cache_dir: Path) -> onnxruntime.InferenceSession:
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

    def __init__(self, visual: VisionTower, onnx_path: Path, cache_dir: Path) -> None:
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
        time: the graph's full-attention blocks attend over all the patches they are given."""
        outputs = []
        for patches, grid in zip(torch.split(pixel_values, grid_thw.prod(-1).tolist()), grid_thw, strict=True):
            inputs = tower_inputs(self.torch_tower, patches, grid[None])
            feed = {name: (value.float() if value.is_floating_point() else value).cpu().numpy()
                    for name, value in inputs.items()}
            [embeddings] = self._session.run(["embeddings"], feed)
            outputs.append(torch.from_numpy(embeddings))
        output = torch.cat(outputs).to(pixel_values.device, self.torch_tower.dtype)
        return BaseModelOutputWithPooling(last_hidden_state=None, pooler_output=output)


def attach_onnx_tower(model: PreTrainedModel, cache_root: Path, fingerprint: str) -> OnnxVisionTower:
    """Export the model's vision tower once (cached by checkpoint fingerprint and graph layout) and swap it in."""
    if not isinstance(model, Qwen2_5_VLForConditionalGeneration):
        raise EngineLoadError("engine.transformers.vision onnx runs the Qwen2.5-VL vision tower only "
                              f"(QoQ-Med-VL-7B/32B), not {type(model).__name__}'s")
    visual = model.model.visual
    directory = cache_root / f"vision-{GRAPH_LAYOUT}-{fingerprint}"
    path = directory / TOWER_FILE
    if not path.is_file():
        export_tower(visual, directory)
    tower = OnnxVisionTower(visual, path, directory)
    model.model.visual = tower
    return tower
