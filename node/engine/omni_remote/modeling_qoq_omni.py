"""The Omni test model: Qwen2.5-VL whose time-series placeholder tokens are replaced by an ECG encoder's output."""

import inspect
from typing import Any

import torch
from torch import nn
from transformers import Qwen2_5_VLForConditionalGeneration

from .configuration_qoq_omni import QoQOmniConfig


class TimeSeriesEncoder(nn.Module):
    """[batch, leads, samples] → [batch, samples / patch, hidden]: patches of ``patch`` samples of all leads."""

    def __init__(self, leads: int, samples: int, patch: int, hidden: int) -> None:
        super().__init__()
        self.leads, self.samples, self.patch = leads, samples, patch
        self.project = nn.Sequential(nn.Linear(leads * patch, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        batch = signal.shape[0]
        patches = signal.reshape(batch, self.leads, self.samples // self.patch, self.patch)
        patches = patches.permute(0, 2, 1, 3).reshape(batch, self.samples // self.patch, self.leads * self.patch)
        return self.project(patches)


class QoQOmniForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL taking ``time_series_data`` [batch, 8, 2500] beside images and text."""

    config_class = QoQOmniConfig

    def __init__(self, config: QoQOmniConfig) -> None:
        super().__init__(config)
        shape = config.time_series_config
        self.time_series_encoder = TimeSeriesEncoder(shape["leads"], shape["samples"], shape["patch"],
                                                     config.get_text_config().hidden_size)
        self.post_init()

    def forward(self, input_ids: torch.Tensor | None = None, *args: Any, inputs_embeds: torch.Tensor | None = None,
                time_series_data: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """Qwen2.5-VL's forward, with the placeholder tokens' embeddings replaced by the encoded signal."""
        if time_series_data is not None and input_ids is not None and inputs_embeds is None:
            mask = input_ids == self.config.time_series_token_id
            if bool(mask.any()):
                inputs_embeds = self.get_input_embeddings()(input_ids)
                encoded = self.time_series_encoder(time_series_data.to(inputs_embeds.dtype))
                if int(mask.sum()) != encoded.shape[0] * encoded.shape[1]:
                    raise ValueError(f"{int(mask.sum())} time-series tokens for {encoded.shape[0]} signals")
                inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1), encoded.reshape(-1).to(
                    inputs_embeds.dtype))
        return super().forward(input_ids, *args, inputs_embeds=inputs_embeds, **kwargs)

    def prepare_inputs_for_generation(self, *args: Any, time_series_data: torch.Tensor | None = None,
                                      is_first_iteration: bool = False, **kwargs: Any) -> dict[str, Any]:
        """The signal goes with the prompt's first step only (as pixel values do)."""
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        inputs["time_series_data"] = time_series_data if is_first_iteration else None
        return inputs


def _with_time_series(signature: inspect.Signature) -> inspect.Signature:
    """Qwen2.5-VL's forward signature plus ``time_series_data`` (generate() checks its inputs against it)."""
    parameters = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    extra = inspect.Parameter("time_series_data", inspect.Parameter.KEYWORD_ONLY, default=None)
    rest = [p for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD]
    return signature.replace(parameters=[*parameters, extra, *rest])


QoQOmniForConditionalGeneration.forward.__signature__ = _with_time_series(  # type: ignore[attr-defined]  # inspect.signature reads it
    inspect.signature(Qwen2_5_VLForConditionalGeneration.forward))
