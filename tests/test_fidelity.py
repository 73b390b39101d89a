"""The model is asked as it was trained: pixels, boxes, questions, volumes and ECG signal.

Each reference here is written from the training code's rules (../shared/QOQMED.md; DDVD233/QoQ_Med
``verl/utils/dataset.py``, ``examples/format_prompt/medical_format.jinja``; DDVD233/CLIMB's data set
files), not from the node's code, and the node's inputs must equal it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy.signal import resample

from node.chain import prepare_study
from node.config import load_config
from node.engine import EngineRequest, GenerationSettings
from node.engine.chat import user_turn
from node.engine.checkpoint import detect_family
from node.engine.transformers_backend import TransformersEngine
from node.imaging.clahe import clahe
from node.imaging.decode import DecodedFrame
from node.imaging.ecg_signal import fourier_resample
from node.imaging.geometry import FrameRef
from node.imaging.inputs import NO_ECG_INPUT, study_inputs, to_model_input
from node.model.profiles import PROFILES
from node.model.prompt import build_prompt
from node.reading import read_batch
from node.routing import DEFAULT_RULES, Router
from node.store import StudySummary
from node.testing.synthetic import ECG_LEADS, ecg_lead_signal, write_cr_study, write_ct_study, write_ecg_study
from tests.helpers import dsr2xml_errors, sr_texts, sr_value_types, wait_for
from tests.reference import reference_training_image

FAMILIES = tuple(PROFILES)
ROUTING = Router.from_file(DEFAULT_RULES)

# --- pixels -----------------------------------------------------------------------------------------


SIZES = [(3000, 2500), (2500, 3000), (2048, 2048), (1024, 256), (4000, 3000), (512, 512), (256, 256), (255, 257),
         (100, 100), (64, 300), (300, 1200), (57, 911), (724, 725), (40, 3000)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("rows", "columns"), SIZES)
def test_model_input_pixels_equal_the_training_preprocessing(family: str, rows: int, columns: int) -> None:
    rng = np.random.default_rng(rows * 7919 + columns)
    for pixels in (rng.integers(0, 256, (rows, columns), dtype=np.uint8),
                   rng.integers(0, 256, (rows, columns, 3), dtype=np.uint8)):
        frame = DecodedFrame(pixels, FrameRef("1.2.3", 1, rows, columns), None)
        made = to_model_input(frame, Path("x.dcm"), PROFILES[family])
        reference = reference_training_image(Image.fromarray(pixels))
        assert made.image.size == reference.size == (made.geometry.width, made.geometry.height)
        assert np.array_equal(np.asarray(made.image), np.asarray(reference))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_processor_makes_the_grid_the_node_records(family: str, tiny_family_dir) -> None:
    """The checkpoint's own processor rounds the pre-resized image to the grid in the geometry
    (28-pixel for the Qwen2.5-VL families, 32-pixel for Qwen3-VL)."""
    engine = TransformersEngine(tiny_family_dir(family), device="cpu")
    factor = {"qwen2.5-vl": 28, "omni": 28, "qwen3-vl": 32}[family]
    assert engine.profile.grid_factor == factor
    for rows, columns in SIZES[:10]:
        frame = DecodedFrame(np.zeros((rows, columns), np.uint8), FrameRef("1.2.3", 1, rows, columns), None)
        made = to_model_input(frame, Path("x.dcm"), engine.profile)
        [(_, grid_h, grid_w)] = engine.processor.image_processor(images=[made.image],
                                                                  return_tensors="pt")["image_grid_thw"].tolist()
        patch = engine.profile.patch_size
        assert (grid_w * patch, grid_h * patch) == made.geometry.grid
        assert made.geometry.grid[0] % factor == 0 and made.geometry.grid[1] % factor == 0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("rows", "columns"), [(3000, 2500), (512, 512), (120, 90), (300, 1200)])
def test_a_box_in_the_pre_resized_frame_lands_on_the_lesion(family: str, rows: int, columns: int) -> None:
    source = np.zeros((rows, columns), dtype=np.uint8)
    r0, r1, c0, c1 = rows // 3, rows // 3 + rows // 8 + 2, columns // 2, columns // 2 + columns // 7 + 2
    source[r0:r1, c0:c1] = 255
    made = to_model_input(DecodedFrame(source, FrameRef("1.2.3", 1, rows, columns), None), Path("x.dcm"),
                          PROFILES[family])
    ys, xs = np.nonzero(np.asarray(reference_training_image(Image.fromarray(source)))[..., 0])
    # what a model that found the lesion answers: its bounding box in the pre-resized image's pixels
    back = made.geometry.box_to_source(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert back is not None
    pixel_x, pixel_y = columns / made.geometry.width, rows / made.geometry.height  # one model pixel, in source
    assert abs(back.column_min - c0) <= max(1, pixel_x) and abs(back.column_max - c1) <= max(1, pixel_x)
    assert abs(back.row_min - r0) <= max(1, pixel_y) and abs(back.row_max - r1) <= max(1, pixel_y)


# --- questions --------------------------------------------------------------------------------------

#: ``examples/format_prompt/medical_format.jinja``, verbatim.
MEDICAL_FORMAT = (
    "{{ content | trim }} You FIRST think about the reasoning process as an internal monologue and then provide the "
    "final answer.\nBefore analyzing medical images, you must identify and outline all objects of interest that are "
    'relevant to diagnosis in json format, with list od bounding box in a key called "bbox_2d" with the format '
    "[x1, y1, x2, y2]. The json should be wrapped in ```json ... ``` tags. The reasoning process MUST BE enclosed "
    "within <think> </think> tags. The final answer MUST BE put in \\boxed{}."
)
CHEXPERT = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
            "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
            "Pneumothorax", "Support Devices"]
#: Task → the training problem string as CLIMB's ``to_qa`` builds it (prefix + question + choices).
TRAINING_PROBLEMS = {
    "chest_xray": "<image>\nAbove is a chest X-ray image of a patient. " + "What is the diagnosis of the patient in "
                  "the X-ray image? Answer with one or multiple phrases from the following:" + "\n" + "\n".join(
                      CHEXPERT),
    "ct_chest": "<image>\nAbove is a chest CT scan slice of a patient. " + "What type of Pulmonary Embolism (PE) is "
                "present in this CT scan? Answer with one of the following:\n" + "No PE\nChronic PE\nAcute PE",
    "ct_head": "<image>\n<image>\nAbove is a brain CT scan slice. " + "Is there any hemorrhage present in this CT "
               "scan slice? Answer with one of the following:\n" + "No Hemorrhage\nHas Hemorrhage",
    "mri": "<image>\nAbove is a brain MRI scan of a patient. " + "What type of tumor, if any, is present in this brain "
           "MRI scan? Answer with one of the following:\n" + "No Tumor\nGlioma Tumor\nMeningioma Tumor\n"
           "Pituitary Tumor",
    "ultrasound": "<image>\nAbove is a breast ultrasound image. " + "What is the diagnosis based on this breast "
                  "ultrasound image? Answer with one word from the following:\n" + "Normal\nBenign\nMalignant",
    "mammography": "<image>\nAbove is a mammography X-ray image of a patient. " + "What is the BIRAD classification of "
                   "the patient in the X-ray image? Answer with one number. Answer with one phrase from the following: "
                   "BIRAD 1\nBIRAD 2\nBIRAD 3\nBIRAD 4\nBIRAD 5\n",
    "dermatology": "<image>\nAbove is a dermoscopy image of a patient. " + "What is the diagnosis of the patient in "
                   "the dermoscopy image? Answer with one word from the following:" + "\n" + "\n".join(
                       ["Melanoma", "Nevus", "Basal Cell Carcinoma", "AKIEC", "Other"]),
    "fundus": "<image>\nAbove is a retinal image of a patient. " + "Grade the diabetic retinopathy of the patient in "
              "the retinal image on the Davis Scale of Diabetic Retinopathy. Answer with one or multiple phrases from "
              "the following:" + "\n" + "\n".join(["No DR", "Mild DR", "Moderate DR", "Severe DR", "Proliferative DR"]),
    "pathology": "<image>\nAbove is a histopathology image. " + "What is the diagnosis based on this histopathology "
                 "image? Choose from the following options:\n" + "\n".join(f"- {d}" for d in [
                     "colon adenocarcinoma", "normal colon tissue", "lung adenocarcinoma", "normal lung tissue",
                     "lung squamous cell carcinoma"]),
}


def training_messages(problem: str, time_series: bool = False) -> list[dict]:
    """``RLHFDataset._build_messages``: the problem through the format template, split on ``<image>``,
    a time-series item after the text."""
    rendered = MEDICAL_FORMAT.replace("{{ content | trim }}", problem.strip())
    content: list[dict] = []
    for index, text in enumerate(rendered.split("<image>")):
        if index:
            content.append({"type": "image"})
        if text:
            content.append({"type": "text", "text": text})
    if time_series:
        content.append({"type": "time-series"})
    return [{"role": "user", "content": content}]


@pytest.mark.parametrize("task", sorted(TRAINING_PROBLEMS))
def test_each_task_asks_the_training_question_byte_for_byte(task: str) -> None:
    spec = ROUTING.rules.domains[task]
    images = TRAINING_PROBLEMS[task].count("<image>")
    request = EngineRequest(tuple(Image.new("RGB", (256, 256)) for _ in range(images)),
                            build_prompt(spec.prompt_question, images), spec.domain or task)
    assert user_turn(request, lambda _: {"type": "image"}) == training_messages(TRAINING_PROBLEMS[task])


def test_the_ecg_question_goes_before_the_signal_as_in_training() -> None:
    spec = ROUTING.rules.domains["ecg"]
    request = EngineRequest((), build_prompt(spec.prompt_question, 0), "ecg",
                            time_series=(np.zeros((8, 2500), np.float32),))
    expected = training_messages(spec.prompt_question, time_series=True)
    assert user_turn(request, lambda _: {"type": "image"}) == expected
    assert "Atrial Fibrillation" in expected[0]["content"][0]["text"]


def test_decoding_is_greedy_and_long_enough_by_default() -> None:
    config = load_config(None, environ={})
    assert config.engine.temperature == 0 and config.engine.max_new_tokens >= 1024
    assert config.imaging.volume_frames == 2 and config.engine.min_pixels is None  # the family's trained bounds


# --- families and the ECG signal ----------------------------------------------------------------------


def reference_omni_signal(rate_hz: float, seconds: float) -> np.ndarray:
    """``process_time_series``: the record's mV (here: the synthetic leads as stored, in µV steps),
    FFT-resampled to 500 Hz, first 2,500 samples, leads I, II, V1–V6 (standard indices 0, 1, 6–11)."""
    samples = round(rate_hz * seconds)
    times = np.arange(samples) / rate_hz
    record = np.stack([np.round(ecg_lead_signal(name, times) * 1000) / 1000 for name, _ in ECG_LEADS], axis=1)
    if rate_hz != 500:
        record = resample(record, int((500 / rate_hz) * samples))
    record = record[:2500]
    if record.shape[0] < 2500:
        record = np.vstack((record, np.zeros((2500 - record.shape[0], record.shape[1]))))
    return record.T[[0, 1, 6, 7, 8, 9, 10, 11], :]


SHUFFLED = ("V6", "II", "aVF", "I", "V1", "V2", "III", "V3", "aVR", "V4", "aVL", "V5")


@pytest.mark.parametrize(("rate_hz", "seconds"), [(250.0, 10.0), (1000.0, 10.0), (500.0, 3.0)])
def test_omni_receives_the_trained_signal_from_a_dicom_waveform(rate_hz: float, seconds: float, tmp_path: Path,
                                                                tiny_family_dir) -> None:
    """Leads stored out of order, at 250/1000 Hz or too short: the model gets [1, 8, 2500] as training made it."""
    study = write_ecg_study(tmp_path / "ecg", rate_hz, seconds, SHUFFLED)
    config = load_config(None, environ={"QOQ_NODE__ENGINE__MAX_NEW_TOKENS": "4"})
    engine = TransformersEngine(tiny_family_dir("omni"), device="cpu")
    received = []
    hook = engine.model.time_series_encoder.register_forward_pre_hook(lambda _, args: received.append(args[0]))
    try:
        prepared = prepare_study(study.study_uid, list(study.files), ROUTING, config.imaging, engine.profile)
        [outcome] = read_batch([prepared], engine, GenerationSettings(config.engine.max_new_tokens))
    finally:
        hook.remove()
    [signal] = received
    assert tuple(signal.shape) == (1, 8, 2500) and signal.dtype.is_floating_point
    assert np.allclose(signal[0].numpy(), reference_omni_signal(rate_hz, seconds), atol=1e-4)
    assert outcome.prepared.task.domain == "ecg" and outcome.findings is not None and not outcome.prepared.inputs


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_and_reads_a_study(family: str, tmp_path: Path, tiny_family_dir) -> None:
    directory = tiny_family_dir(family)
    import json

    assert detect_family(json.loads((directory / "config.json").read_text())) == family
    cr = write_cr_study(tmp_path / "cr", size=600)
    config = load_config(None, environ={"QOQ_NODE__ENGINE__MAX_NEW_TOKENS": "6"})
    engine = TransformersEngine(directory, device="cpu")
    prepared = prepare_study(cr.study_uid, list(cr.files), ROUTING, config.imaging, engine.profile)
    [outcome] = read_batch([prepared], engine, GenerationSettings(config.engine.max_new_tokens))
    assert outcome.prepared.task.name == "chest_xray" and f" {family} " in outcome.model
    [made] = outcome.prepared.inputs
    assert made.image.size == (600, 600) and made.geometry.grid == engine.profile.grid_size(600, 600)


def test_a_vl_model_is_given_no_ecg_signal(tiny_engine) -> None:
    request = EngineRequest((), build_prompt("q", 0), "ecg", GenerationSettings(4),
                            time_series=(np.zeros((8, 2500), np.float32),))
    with pytest.raises(ValueError, match="takes no ECG"):
        tiny_engine.generate([request])


# --- through the running node --------------------------------------------------------------------------


def _read_by_the_node(storescu, node, files: list[Path]) -> StudySummary:
    assert storescu(node.scp.port, files).returncode == 0
    return wait_for(lambda: next((s for s in node.store.studies.summaries()
                                  if s.state in ("complete", "skipped", "failed")), None), timeout=90)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.usefixtures("dcmtk")
def test_the_node_reads_studies_with_each_family(family: str, make_node, tmp_path: Path, tiny_family_dir,
                                                 storescu, dciodvfy_errors) -> None:
    """``serve`` with each family's checkpoint: a chest CR for all; for Omni an ECG, whose report references
    the waveform and holds no image coordinates (and no SEG or presentation state is made)."""
    node = make_node(engine={"backend": "transformers", "model": tiny_family_dir(family), "device": "cpu",
                             "max_new_tokens": 8})
    study = write_ecg_study(tmp_path / "ecg", rate_hz=250.0) if family == "omni" else write_cr_study(tmp_path / "cr")
    summary = _read_by_the_node(storescu, node, list(study.files))
    assert summary.state == "complete", summary.detail
    [version] = (node.config.storage.root / "results" / study.study_uid).iterdir()
    sr = pydicom.dcmread(version / "sr.dcm")
    value_types = sr_value_types(sr)
    if family == "omni":
        assert sorted(p.name for p in version.iterdir()) == ["report.dcm", "sr.dcm"]  # the PDF: text only
        assert {"IMAGE", "SCOORD"}.isdisjoint(value_types) and "WAVEFORM" in value_types
        assert dciodvfy_errors(version / "sr.dcm") == [] and dsr2xml_errors(version / "sr.dcm") == ""
    # provenance: the device observer's model name and the algorithm name carry the model's identity and family
    assert any(f"tiny-random {family} (TEST MODEL" in text for text in sr_texts(sr))


def test_an_ecg_study_is_settled_as_skipped_when_the_model_takes_no_ecg(node, tmp_path: Path, storescu) -> None:
    """The replay node mounts no model of its own, so its inputs are made for qwen2.5-vl: no ECG. The skip is
    final at once (it would recur), with its reason — never a failure retried three times."""
    study = write_ecg_study(tmp_path / "ecg")
    summary = _read_by_the_node(storescu, node, list(study.files))
    assert (summary.state, summary.detail, summary.attempts) == ("skipped", NO_ECG_INPUT, 0)



@pytest.mark.slow
def test_model_tiny_builds_each_family_and_check_names_it(tmp_path: Path) -> None:
    """``qoq-node model tiny --family omni`` ships its own modelling code; ``check`` says what is mounted."""
    import subprocess
    import sys

    built = subprocess.run([sys.executable, "-m", "node", "model", "tiny", str(tmp_path / "omni"), "--family", "omni"],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "omni" / "modeling_qoq_omni.py").is_file()
    checked = subprocess.run([sys.executable, "-m", "node", "check"], capture_output=True, text=True,
                             env={**os.environ, "QOQ_NODE__ENGINE__MODEL": str(tmp_path / "omni")})
    assert checked.returncode == 0, checked.stderr
    assert "family omni: inputs image, time-series, text" in checked.stdout
    assert "[65536, 524288] pixels" in checked.stdout and "28-pixel grid" in checked.stdout


# --- the node's own copies of training's signal and image operations ------------------------------------


@pytest.mark.parametrize(("length", "samples"), [(5000, 2500), (2500, 5000), (1250, 2500), (10000, 2500), (999, 2500),
                                                 (2500, 2499), (7, 3)])
def test_fourier_resample_is_scipys(length: int, samples: int) -> None:
    signal = np.random.default_rng(length).normal(size=(length, 8))
    assert np.allclose(fourier_resample(signal, samples), resample(signal, samples), atol=1e-10)


@pytest.mark.parametrize("shape", [(512, 512), (301, 517), (64, 64), (100, 37), (17, 300), (8, 8)])
def test_clahe_is_opencvs(shape: tuple[int, int]) -> None:
    """CLIMB enhanced its CT angiography slices with cv2.createCLAHE(1.5, (8, 8)): the node's numpy copy
    gives the same bytes (noise, and a smooth ramp where interpolation between tiles matters)."""
    import cv2

    rng = np.random.default_rng(shape[0] * 31 + shape[1])
    ramp = (np.add.outer(np.arange(shape[0]), np.arange(shape[1])) * 255 // sum(shape)).astype(np.uint8)
    for image in (rng.integers(0, 256, shape, dtype=np.uint8), ramp):
        expected = cv2.createCLAHE(clipLimit=1.5, tileGridSize=(8, 8)).apply(image)
        assert np.array_equal(clahe(image, 1.5, (8, 8)), expected)


def test_a_ctpa_slice_is_windowed_and_enhanced_as_training_rendered_it(tmp_path: Path) -> None:
    """rspect/nifti_utils: window 700 / level 80 → uint8, then CLAHE; the node's slice equals it."""
    import cv2

    [path] = write_ct_study(tmp_path / "ct", slices=1, size=512).files
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    lower, upper = 80 - 700 / 2, 80 + 700 / 2
    windowed = ((np.clip(hu, lower, upper) - lower) / 700 * 255).astype(np.uint8)
    expected = cv2.createCLAHE(clipLimit=1.5, tileGridSize=(8, 8)).apply(windowed)
    [made] = study_inputs([path], PROFILES["qwen2.5-vl"], trained_windows=("ctpa",)).images
    assert np.array_equal(np.asarray(made.image)[..., 0], expected)
