"""``qoq-node engine prepare``: the one-off work a backend needs before the node starts.

For ``tensorrt-llm`` with ``quantization: fp8`` it quantizes the language model's weights to FP8
with NVIDIA ModelOpt (post-training, calibrated on the node's own prompt over synthetic studies;
the vision tower stays bf16) and exports a checkpoint TensorRT-LLM loads, cached under the key of
:mod:`node.engine.engine_cache`. bf16 needs nothing: TensorRT-LLM's PyTorch workflow reads the
checkpoint as it is. Other backends need nothing either; the command says so.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from node import __version__
from node.config import EngineConfig
from node.engine import EngineRequest, trtllm_backend
from node.engine.checkpoint import chat_prompt, load_processor, open_checkpoint
from node.engine.engine_cache import cache_entry, is_complete, model_fingerprint, write_manifest
from node.engine.errors import EngineLoadError
from node.model.prompt import build_prompt

CALIBRATION_STUDIES = 16

#: Writes calibration study number ``index`` (from 0) into the folder given and returns its DICOM files;
#: the command gives :func:`node.testing.synthetic.calibration_study` (the engine imports no test tooling).
CalibrationStudy = Callable[[Path, int], Sequence[Path]]


def prepare(config: EngineConfig, calibration_study: CalibrationStudy) -> str:
    """Do what ``config``'s backend needs ahead of start, calibrating on the studies ``calibration_study``
    writes; returns what was done, for the operator."""
    if config.backend != "tensorrt-llm":
        return f"nothing to prepare for the {config.backend} backend"
    if config.model is None:
        raise EngineLoadError("engine.model is not set: point it at the QoQ-Med weights")
    open_checkpoint(config.model)
    library = trtllm_backend.import_tensorrt_llm()
    trtllm_backend.require_gpus(config.tensorrt_llm, trtllm_backend.visible_gpus())
    if config.tensorrt_llm.quantization == "none":
        return ("nothing to build: TensorRT-LLM's PyTorch workflow runs the bf16 checkpoint as it is "
                "(the node warms it up at start)")
    gpu = trtllm_backend.gpu_name()
    entry = cache_entry(config, library.__version__, gpu)
    if is_complete(entry):
        return f"already prepared: {entry}"
    partial = entry.with_name(entry.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        modelopt_version = quantize_fp8(config, partial, calibration_study)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    write_manifest(partial, {
        "model": str(config.model), "fingerprint": model_fingerprint(config.model), "quantization": "fp8",
        "gpu": gpu, "tensorrt_llm": library.__version__, "modelopt": modelopt_version, "qoq_node": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    partial.rename(entry)
    return f"FP8 checkpoint written to {entry}"


def calibration_requests(config: EngineConfig, calibration_study: CalibrationStudy) -> list[EngineRequest]:
    """Calibration inputs made the way the node makes them: the studies ``calibration_study`` writes
    through the node's own imaging, with the node's prompt."""
    from node.engine.factory import engine_profile
    from node.imaging.inputs import study_inputs

    profile = engine_profile(config)
    requests = []
    with tempfile.TemporaryDirectory(prefix="qoq-calibration-") as workdir:
        for index in range(CALIBRATION_STUDIES):
            folder = Path(workdir) / str(index)
            images = study_inputs(calibration_study(folder, index), profile).images
            prompt = build_prompt("What are the findings in this study?", image_count=len(images))
            requests.append(EngineRequest(tuple(i.image for i in images), prompt, "calibration"))
    return requests


def quantize_fp8(config: EngineConfig, out_dir: Path, calibration_study: CalibrationStudy) -> str:
    """Quantize the language model to FP8 with ModelOpt, calibrated on the studies ``calibration_study``
    writes, and export the checkpoint into ``out_dir``; returns ModelOpt's version."""
    assert config.model is not None
    try:
        import modelopt
        import modelopt.torch.quantization as mtq
        from modelopt.torch.export import export_hf_checkpoint
    except ImportError as exc:
        raise EngineLoadError(f"FP8 preparation needs NVIDIA ModelOpt (pip install nvidia-modelopt): {exc}") from exc
    import torch

    from node.engine.transformers_backend import load_model

    checkpoint = open_checkpoint(config.model, config.family, config.min_pixels, config.max_pixels)
    processor = load_processor(checkpoint)
    model = load_model(checkpoint, torch.bfloat16, "sdpa", "cuda")
    quant_config = copy.deepcopy(mtq.FP8_DEFAULT_CFG)
    quant_config["quant_cfg"]["*visual*"] = {"enable": False}

    calibration = calibration_requests(config, calibration_study)

    def forward_loop(model_under_calibration: torch.nn.Module) -> None:
        for request in calibration:
            inputs = processor(text=[chat_prompt(processor, request)], images=list(request.images),
                               return_tensors="pt").to("cuda")
            with torch.inference_mode():
                model_under_calibration(**inputs)

    mtq.quantize(model, quant_config, forward_loop)
    export_hf_checkpoint(model, export_dir=out_dir)
    processor.save_pretrained(out_dir)
    return modelopt.__version__
