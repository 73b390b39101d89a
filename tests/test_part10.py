"""The byte-level structural check and file meta: cross-checked against pydicom and dcmtk."""

from __future__ import annotations

import contextlib
import io
import subprocess
import zlib
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.filereader import data_element_generator, read_dataset
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from node.ingest.incoming import INFLATED_TWIN
from node.ingest.part10 import IMPLEMENTATION_CLASS_UID, MalformedDataset, file_meta, read_header
from tests.helpers import PYDICOM_TEST_FILES, dataset_bytes

# Bundled pydicom files with a file meta header, across encodings: implicit, explicit
# little and big endian, deflate, JPEG, JPEG-LS, JPEG 2000, RLE, SR, waveform, sequences.
ENCODED_FILES = [
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_RLE.dcm",
    "test-SR.dcm",
    "waveform_ecg.dcm",
    "nested_priv_SQ.dcm",
    "UN_sequence.dcm",
    "rtplan.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
]


def _existing(names: list[str]) -> list[str]:
    return [name for name in names if (PYDICOM_TEST_FILES / name).exists()]


def _sample(name: str) -> tuple[bytes, str, pydicom.Dataset]:
    """A file's dataset as the walker sees it (a deflated one inflated, as it is received) and its syntax."""
    path = PYDICOM_TEST_FILES / name
    ds = pydicom.dcmread(path)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    if syntax in INFLATED_TWIN:
        return zlib.decompress(dataset_bytes(path), -zlib.MAX_WBITS), INFLATED_TWIN[syntax], ds
    return dataset_bytes(path), syntax, ds


@pytest.mark.parametrize("name", _existing(ENCODED_FILES))
def test_header_matches_pydicom(name: str) -> None:
    data, syntax, ds = _sample(name)
    header = read_header(data, syntax)
    assert header.sop_instance_uid == ds.get("SOPInstanceUID", "")
    assert header.sop_class_uid == ds.get("SOPClassUID", "")
    assert header.study_uid == ds.get("StudyInstanceUID", "")
    assert header.series_uid == ds.get("SeriesInstanceUID", "")
    assert header.modality == ds.get("Modality", "")


@pytest.mark.parametrize("name", _existing(ENCODED_FILES))
def test_every_truncation_is_detected(name: str) -> None:
    """Cut at every element boundary, next to each, and mid-element alike: a cut exactly between two top-level
    elements leaves a whole, shorter dataset (its first elements, as pydicom reads them), which is accepted;
    any other cut leaves an element or item short, and is refused: missing bytes are never silent."""
    data, syntax, _ = _sample(name)
    implicit, little_endian = syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    ends = _top_level_ends(data, implicit, little_endian)
    cuts = set(range(0, len(data) - 1, max(1, len(data) // 400)))
    cuts |= {end + step for end in ends for step in (-1, 0, 1) if 0 <= end + step < len(data)}
    accepted = set()
    for cut in cuts:
        with contextlib.suppress(MalformedDataset):
            read_header(data[:cut], syntax)
            accepted.add(cut)
    assert accepted == cuts & ends
    tags = list(read_dataset(io.BytesIO(data), implicit, little_endian))
    for cut in accepted:  # each accepted prefix is the whole object's first elements, nothing cut short
        prefix = read_dataset(io.BytesIO(data[:cut]), implicit, little_endian)
        assert list(prefix) == tags[:len(prefix)]
    with pytest.raises(MalformedDataset):
        read_header(data[:-1], syntax)


def _top_level_ends(data: bytes, implicit: bool, little_endian: bool) -> set[int]:
    """Where a top-level element ends (and 0, before the first), as pydicom's own reader walks the dataset."""
    stream = io.BytesIO(data)
    ends = {0}
    for _ in data_element_generator(stream, implicit, little_endian):
        ends.add(stream.tell())
    assert len(data) in ends
    return ends


def test_an_invalid_vr_is_malformed() -> None:
    with pytest.raises(MalformedDataset):
        read_header(b"\x08\x00\x16\x00ZZ\x04\x00abcd", "1.2.840.10008.1.2.1")


@pytest.mark.parametrize("stray", [b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", b"\xfe\xff\x00\xe0\x00\x00\x00\x00"],
                         ids=["sequence-delimiter", "item"])
@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
def test_a_delimiter_or_item_at_the_top_level_is_malformed(stray: bytes, syntax: str) -> None:
    """Issue 26 item 3: a Sequence Delimitation Item (or an Item) where a data element belongs, before the
    dataset's last element or after it."""
    modality = b"\x08\x00\x60\x00" + (b"\x02\x00\x00\x00" if syntax.endswith(".2") else b"CS\x02\x00") + b"CT"
    read_header(modality + modality.replace(b"\x60", b"\x61"), syntax)  # well-formed without it
    for data in (modality + stray, stray + modality):
        with pytest.raises(MalformedDataset, match="outside a sequence"):
            read_header(data, syntax)


def test_an_identifying_attribute_in_another_explicit_vr_is_malformed() -> None:
    """Issue 26 item 5: a SOP Instance UID encoded as OB was stored, then failed whatever read it."""
    uid = b"1.2.3.4\x00"
    as_ui = b"\x08\x00\x18\x00UI\x08\x00" + uid
    assert read_header(as_ui, "1.2.840.10008.1.2.1").sop_instance_uid == "1.2.3.4"
    assert read_header(as_ui.replace(b"UI", b"UN", 1)[:6] + b"\x00\x00\x08\x00\x00\x00" + uid,
                       "1.2.840.10008.1.2.1").sop_instance_uid == "1.2.3.4"
    with pytest.raises(MalformedDataset, match=r"\(0008,0018\) has VR OB, not UI"):
        read_header(b"\x08\x00\x18\x00OB\x00\x00\x08\x00\x00\x00" + uid, "1.2.840.10008.1.2.1")


def test_deeply_nested_sequences_are_refused_not_a_crash() -> None:
    # (0008,1115) SQ of undefined length, one undefined-length item, nested 200 times.
    opening = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    with pytest.raises(MalformedDataset, match="nested deeper"):
        read_header(opening * 200, "1.2.840.10008.1.2.1")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"]))
def test_any_bytes_either_parse_or_raise_malformed(blob: bytes, syntax: str) -> None:
    with contextlib.suppress(MalformedDataset):  # anything else escaping would fail the test
        read_header(blob, syntax)


@pytest.mark.usefixtures("dcmtk")
def test_file_meta_makes_a_valid_part10_file(tmp_path: Path) -> None:
    data, syntax, ds = _sample("MR_small_jp2klossless.dcm")
    path = tmp_path / "x.dcm"
    path.write_bytes(file_meta(ds.SOPClassUID, ds.SOPInstanceUID, syntax, "PACS1") + data)
    reread = pydicom.dcmread(path)
    meta = reread.file_meta
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.TransferSyntaxUID == syntax
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.SourceApplicationEntityTitle == "PACS1"
    assert reread.PixelData == ds.PixelData
    dump = subprocess.run(["dcmdump", "-M", str(path)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    assert "JPEG2000LosslessOnly" in dump.stdout or "JPEG 2000" in dump.stdout
