"""Imaging and CPU engine benchmark: DICOM → model inputs, and the tiny model's latency.

    python benchmarks/imaging_engine.py --rounds 5

1. Imaging of a synthetic 300-slice 512×512 CT series (headers of all slices, key slices
   decoded, windowed and resized) and of a synthetic 3000×2500 DX.
2. The transformers backend with the tiny random checkpoint on the CPU: one request with one
   CT key image, 32 new tokens (greedy), and a batch of 4.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
import transformers
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

from node.engine import EngineRequest, GenerationSettings
from node.engine.tiny import build_tiny_checkpoint
from node.engine.transformers_backend import TransformersEngine
from node.imaging.inputs import study_inputs
from node.model.profiles import PROFILES
from node.model.prompt import build_prompt
from node.testing.synthetic import write_ct_study, write_file

PROFILE = PROFILES["qwen2.5-vl"]


def _dx(path: Path) -> Path:
    """A 3000×2500 16-bit DX made from a synthetic CT slice's header."""
    [template] = write_ct_study(path.parent / "dx-template", slices=1, size=32).files
    ds = pydicom.dcmread(template)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = DigitalXRayImageStorageForPresentation, generate_uid(), "DX"
    ds.Rows, ds.Columns = 3000, 2500
    rng = np.random.default_rng(0)
    ds.PixelData = (rng.integers(0, 4096, (3000, 2500), dtype=np.uint16)).tobytes()
    ds.WindowCenter, ds.WindowWidth, ds.RescaleIntercept = "2048", "4096", "0"
    write_file(ds, path)
    return path


def _median_seconds(action, rounds: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), [round(t, 4) for t in times]


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-images", type=int, default=4)
    args = parser.parse_args()
    summary: dict[str, object] = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="qoq-bench-") as tmp:
        workdir = Path(tmp)
        ct = list(write_ct_study(workdir / "ct", slices=300, size=512).files)
        dx = _dx(workdir / "dx.dcm")
        median, all_times = _median_seconds(lambda: study_inputs(ct, PROFILE, args.max_images), args.rounds)
        summary["ct_300_slices_imaging_median_s"], summary["ct_300_slices_imaging_all_s"] = round(median, 4), all_times
        median, all_times = _median_seconds(lambda: study_inputs([dx], PROFILE, 1), args.rounds)
        summary["dx_3000x2500_imaging_median_s"], summary["dx_3000x2500_imaging_all_s"] = round(median, 4), all_times

        engine = TransformersEngine(build_tiny_checkpoint(workdir / "tiny"), device="cpu")
        [key_image] = study_inputs(ct[:1], PROFILE, 1).images
        request = EngineRequest((key_image.image,), build_prompt("What are the findings?", 1), "ct",
                                GenerationSettings(max_new_tokens=32))
        engine.generate([request])  # warm-up
        for batch in (1, 4):
            median, all_times = _median_seconds(lambda b=batch: engine.generate([request] * b), args.rounds)
            summary[f"tiny_cpu_batch{batch}_32_tokens_median_s"] = round(median, 4)
            summary[f"tiny_cpu_batch{batch}_all_s"] = all_times
        summary["tiny_image_size"] = list(key_image.image.size)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
