"""Imaging: decoding every encoding, LUTs, colour, multi-frame, key frames, model inputs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from node.imaging.decode import ImagingError, iter_frames
from node.imaging.ecg import render_ecg
from node.imaging.inputs import ECG_AS_IMAGE_CAVEAT, NO_ECG_INPUT, NotForModel, study_inputs
from node.imaging.series import InstanceInfo, evenly_spaced, select_key_frames
from node.model.profiles import PROFILES
from node.testing.synthetic import write_ct_study, write_file
from tests.helpers import PYDICOM_TEST_FILES

QWEN25 = PROFILES["qwen2.5-vl"]


def _frames(name: str, **kwargs) -> list:
    return list(iter_frames(PYDICOM_TEST_FILES / name, **kwargs))


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm",
     "MR_small_implicit.dcm"],
)
def test_lossless_encodings_decode_to_the_same_pixels(name: str) -> None:
    [reference] = _frames("MR_small.dcm")
    [frame] = _frames(name)
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == (64, 64)
    assert np.array_equal(frame.pixels, reference.pixels)
    assert frame.window == (600.0, 1600.0)  # the header's window


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm"])
def test_ybr_becomes_rgb(name: str) -> None:
    [reference] = _frames("SC_rgb_rle.dcm")
    [frame] = _frames(name)
    assert frame.pixels.shape == (100, 100, 3)
    assert np.abs(frame.pixels.astype(int) - reference.pixels.astype(int)).mean() < 3  # lossy JPEG / 4:2:2


def test_palette_colour_and_multiframe() -> None:
    [palette] = _frames("examples_palette.dcm")
    assert palette.pixels.shape == (350, 800, 3)
    cine = _frames("examples_ybr_color.dcm")
    assert len(cine) == 30 and [f.source.frame for f in cine] == list(range(1, 31))
    assert cine[0].pixels.shape == (240, 320, 3)


def test_lossy_and_12_bit_jpeg_decode() -> None:
    for name in ("JPGExtended.dcm", "JPEG2000.dcm"):
        [frame] = _frames(name)
        assert frame.pixels.shape == (1024, 256) and frame.pixels.max() > frame.pixels.min()


def _ct_slice(tmp_path: Path) -> Path:
    return write_ct_study(tmp_path / "ct", slices=1, size=128).files[0]


def test_rescale_and_window_from_the_header(tmp_path: Path) -> None:
    [frame] = iter_frames(_ct_slice(tmp_path))
    assert frame.window == (40.0, 400.0)
    # stored 1024 - 1024 intercept = 0 HU (water): (0 - (40 - 200)) / 400 * 255 = 102
    assert frame.pixels[64, 30] == 102
    assert frame.pixels[0, 0] == 0  # air, -1024 HU, below the window


def test_default_window_when_the_header_has_none_and_monochrome1_is_inverted(tmp_path: Path) -> None:
    path = _ct_slice(tmp_path)
    ds = pydicom.dcmread(path)
    del ds.WindowCenter, ds.WindowWidth
    write_file(ds, path)
    [lung] = iter_frames(path, default_window="lung")
    assert lung.window == (-600.0, 1500.0)
    ds.PhotometricInterpretation = "MONOCHROME1"
    write_file(ds, path)
    [inverted] = iter_frames(path, default_window="lung")
    assert np.array_equal(inverted.pixels, 255 - lung.pixels)
    [robust] = iter_frames(path)  # no window anywhere: the frame's own range
    assert robust.window is not None and robust.pixels.max() == 255


def test_ecg_waveform_becomes_a_paper_style_plot() -> None:
    frame = render_ecg(PYDICOM_TEST_FILES / "waveform_ecg.dcm")
    assert frame.pixels.shape == (480, 1000, 3)  # 10 s at 25 mm/s, 4 rows of 30 mm, 4 px/mm
    grid_pink = np.all(frame.pixels == (240, 160, 160), axis=-1).mean()
    ink = np.all(frame.pixels == (0, 0, 0), axis=-1).mean()
    assert grid_pink > 0.05 and ink > 0.005  # a grid and traces
    # lead II's rhythm strip (bottom row) spans the whole width
    bottom = frame.pixels[360:480]
    columns_with_ink = np.any(np.all(bottom == (0, 0, 0), axis=-1), axis=0)
    assert columns_with_ink.mean() > 0.95



def test_an_ecg_is_no_input_for_a_vl_model_unless_a_plot_is_asked_for() -> None:
    ecg = [PYDICOM_TEST_FILES / "waveform_ecg.dcm"]
    with pytest.raises(NotForModel, match=NO_ECG_INPUT):
        study_inputs(ecg, QWEN25)
    plotted = study_inputs(ecg, QWEN25, ecg_as_image=True)
    assert len(plotted.images) == 1 and plotted.images[0].geometry.placements[0].source.rows == 480
    assert plotted.caveats == (ECG_AS_IMAGE_CAVEAT,) and not plotted.signals
    signal = study_inputs(ecg, PROFILES["omni"])
    assert not signal.images and signal.signals[0].signal.shape == (8, 2500) and not signal.caveats


def test_not_an_ecg_is_a_clear_error() -> None:
    with pytest.raises(ImagingError, match="cannot read the waveform"):
        render_ecg(PYDICOM_TEST_FILES / "CT_small.dcm")


def test_undecodable_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImagingError, match="cannot decode"):
        list(iter_frames(PYDICOM_TEST_FILES / "waveform_ecg.dcm"))  # no pixel data
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"DICM" + b"\x00" * 10)
    with pytest.raises(ImagingError):
        list(iter_frames(broken))


def test_evenly_spaced() -> None:
    assert evenly_spaced(300, 4) == [0, 99, 199, 299]  # int(i·299/3), as training's frame sampler
    assert evenly_spaced(300, 2) == [0, 299]
    assert evenly_spaced(3, 4) == [0, 1, 2]
    assert evenly_spaced(9, 1) == [4]


def test_ct_key_frames_follow_slice_position_not_file_order(tmp_path: Path) -> None:
    study = write_ct_study(tmp_path / "ct", slices=40, series=2, size=32)
    infos = [InstanceInfo.read(p) for p in reversed(study.files)]
    keys = select_key_frames(infos, 4)
    positions = [pydicom.dcmread(path).ImagePositionPatient[2] for path, _ in keys]
    assert positions == [0.0, 13.0, 26.0, 39.0]
    assert len({pydicom.dcmread(path).SeriesInstanceUID for path, _ in keys}) == 1


def test_mammography_one_frame_per_view(tmp_path: Path) -> None:
    [base] = write_ct_study(tmp_path / "base", slices=1, size=32).files
    template = pydicom.dcmread(base)
    paths = []
    for index, (laterality, view) in enumerate([("L", "CC"), ("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]):
        ds = copy.deepcopy(template)
        ds.Modality, ds.ImageLaterality, ds.ViewPosition = "MG", laterality, view
        ds.SOPInstanceUID, ds.InstanceNumber = generate_uid(), index + 1
        paths.append(tmp_path / f"mg{index}.dcm")
        write_file(ds, paths[-1])
    keys = select_key_frames([InstanceInfo.read(p) for p in paths], 8)
    assert [path.name for path, _ in keys] == ["mg0.dcm", "mg2.dcm", "mg3.dcm", "mg4.dcm"]


def test_study_inputs_are_at_model_size_and_point_at_their_source(tmp_path: Path) -> None:
    study = write_ct_study(tmp_path / "ct", slices=12, size=256)
    assert len(study_inputs(list(study.files), QWEN25).images) == 2  # a volume: 2 slices, as trained
    inputs = study_inputs(list(study.files), QWEN25, volume_frames=3).images
    assert len(inputs) == 3
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in study.files}
    for model_input in inputs:
        # 256² = 65,536 pixels lies inside the trained bounds: no pre-resize; the processor's grid is 252²
        assert model_input.image.size == (256, 256) == (model_input.geometry.width, model_input.geometry.height)
        assert model_input.geometry.grid == (252, 252)
        assert model_input.geometry.placements[0].source.sop_instance_uid in uids
        assert model_input.window == (40.0, 400.0)
    cine = study_inputs([PYDICOM_TEST_FILES / "examples_ybr_color.dcm"], QWEN25).images
    assert [m.geometry.placements[0].source.frame for m in cine] == [1, 30]
    cine = study_inputs([PYDICOM_TEST_FILES / "examples_ybr_color.dcm"], QWEN25, volume_frames=4).images
    assert [m.geometry.placements[0].source.frame for m in cine] == [1, 10, 20, 30]
    assert cine[0].image.mode == "RGB"


def test_trained_windows_render_each_key_frame_once_per_window(tmp_path: Path) -> None:
    study = write_ct_study(tmp_path / "ct", slices=5, size=64)
    made = study_inputs(list(study.files), QWEN25, volume_frames=1, trained_windows=("brain", "bone")).images
    assert [m.window for m in made] == [(40.0, 80.0), (400.0, 1800.0)]  # the header's 40/400 is overridden
    assert made[0].geometry.placements == made[1].geometry.placements  # one slice, twice
    ctpa = study_inputs(list(study.files), QWEN25, volume_frames=1, trained_windows=("ctpa",)).images[0]
    assert ctpa.window == (80.0, 700.0)
