"""A key image the decoder or the resize cannot take costs that image, not the study (issue 26, item 7)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from node.imaging.decode import iter_frames
from node.imaging.inputs import study_inputs
from node.model.profiles import PROFILES
from node.testing.synthetic import SyntheticStudy, restamp, write_cr_study, write_file
from tests.helpers import PYDICOM_TEST_FILES


def _double_length_pixel_data(ds: Dataset) -> None:
    ds.PixelData = ds.PixelData * 2


def _palette_colour_without_a_lut(ds: Dataset) -> None:
    ds.PhotometricInterpretation = "PALETTE COLOR"


def _one_pixel_high(ds: Dataset) -> None:
    ds.Rows, ds.Columns = 1, 4096
    ds.PixelData = np.full((1, 4096), 1024, dtype=np.uint16).tobytes()


@pytest.mark.parametrize("spoil", [_double_length_pixel_data, _palette_colour_without_a_lut, _one_pixel_high],
                         ids=["double-length-pixel-data", "palette-colour-without-lut", "one-pixel-high"])
def test_a_bad_key_image_is_left_out_and_the_rest_is_read(tmp_path: Path, spoil: Callable[[Dataset], None]) -> None:
    """Two radiographs of one study, one spoiled as real files were: the other is read, and the
    caveat every result carries says one image was left out."""
    good = write_cr_study(tmp_path / "good", size=256)
    bad: SyntheticStudy = restamp(write_cr_study(tmp_path / "bad", size=256), StudyInstanceUID=good.study_uid,
                                  SeriesInstanceUID=good.series_uids[0], InstanceNumber="2")
    ds = pydicom.dcmread(bad.files[0])
    spoil(ds)
    write_file(ds, bad.files[0])
    made = study_inputs([*good.files, *bad.files], PROFILES["qwen2.5-vl"])
    assert [image.path for image in made.images] == [good.files[0]]
    assert made.caveats == ("1 key image(s) could not be decoded and were not read",)


def test_a_small_image_read_whole_with_its_header_is_checked_and_decoded(tmp_path: Path) -> None:
    """Pixel data under the deferred-read size comes with the header (not left on disk): its length is
    checked and it decodes the same."""
    study = write_cr_study(tmp_path / "small", size=16)
    made = study_inputs(study.files, PROFILES["qwen2.5-vl"])
    assert [image.path for image in made.images] == list(study.files) and made.caveats == ()


@pytest.mark.parametrize("name", ["MR_small_padded.dcm", "SC_rgb_jpeg.dcm", "image_dfl.dcm"])
def test_padding_short_of_a_frame_compressed_and_deflated_files_still_decode(name: str) -> None:
    """What pydicom reads, decoding frame by frame still reads: pixel data padded by less than a frame, a
    JPEG whose offset table pydicom reads only from a whole dataset, a deflated dataset."""
    [frame] = iter_frames(PYDICOM_TEST_FILES / name)
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape[:2] == (frame.source.rows, frame.source.columns)
