"""The modelling code the tiny Omni test checkpoint ships (``trust_remote_code``), written by the project.

QoQ-Med-Omni-7B's own code is not public here; these three files follow its published interface
(``AutoModel``/``AutoProcessor`` with ``trust_remote_code``, ``processor(text=..., images=...,
time_series_data=[batch, 8, 2500])``, a ``{"type": "time-series"}`` chat item) on a Qwen2.5-VL body
with a small ECG encoder, so the node's Omni path runs end to end without the real weights. They are
copied into the checkpoint directory and loaded from there, as the real checkpoint's are.
"""
