"""The Omni test model's processor: Qwen2.5-VL's, plus ``time_series_data`` and its placeholder tokens."""

from typing import Any

import torch
from transformers import BatchFeature, Qwen2_5_VLProcessor


class QoQOmniProcessor(Qwen2_5_VLProcessor):
    """Expands each ``<|ts_pad|>`` to the encoder's token count and returns the signal as ``time_series_data``."""

    time_series_token = "<|ts_pad|>"  # noqa: S105 (a token, not a password)
    time_series_tokens = 50  # samples / patch

    def __call__(self, images: Any = None, text: str | list[str] | None = None, videos: Any = None,
                 time_series_data: Any = None, **kwargs: Any) -> BatchFeature:
        """Qwen2.5-VL's processing; ``time_series_data`` [batch, leads, samples], one per placeholder in order."""
        if time_series_data is not None:
            texts = [text] if isinstance(text, str) else list(text or ())
            signals = torch.as_tensor(time_series_data, dtype=torch.float32)
            placeholders = sum(t.count(self.time_series_token) for t in texts)
            if signals.ndim != 3 or placeholders != signals.shape[0]:
                raise ValueError(f"{placeholders} time-series placeholders for time_series_data of shape "
                                 f"{tuple(signals.shape)}")
            text = [t.replace(self.time_series_token, self.time_series_token * self.time_series_tokens) for t in texts]
        outputs = super().__call__(images=images, text=text, videos=videos, **kwargs)
        if time_series_data is not None:
            outputs["time_series_data"] = signals
        return outputs
