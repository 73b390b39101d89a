"""Configuration of the Omni test model: Qwen2.5-VL plus an ECG time-series encoder."""

from typing import Any

from transformers import Qwen2_5_VLConfig


class QoQOmniConfig(Qwen2_5_VLConfig):
    """Qwen2.5-VL's configuration with the time-series encoder's shape and its placeholder token."""

    model_type = "qoq_omni"

    def __init__(self, time_series_config: dict[str, int] | None = None, time_series_token_id: int | None = None,
                 **kwargs: Any) -> None:
        self.time_series_config = time_series_config or {"leads": 8, "samples": 2500, "patch": 50}
        self.time_series_token_id = time_series_token_id
        super().__init__(**kwargs)
