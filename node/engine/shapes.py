"""The published shape of QoQ-Med-VL-7B (Qwen2.5-VL-7B), for models with random weights that cost
the same compute: benchmarks and sizing (../shared/QOQMED.md)."""

from __future__ import annotations

#: The language model.
QWEN25_VL_7B_TEXT = {
    "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "intermediate_size": 18944, "vocab_size": 152064, "max_position_embeddings": 32768,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
}
#: The vision tower.
QWEN25_VL_7B_VISION = {
    "depth": 32, "hidden_size": 1280, "num_heads": 16, "intermediate_size": 3420, "patch_size": 14,
    "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
    "out_hidden_size": 3584,
}
