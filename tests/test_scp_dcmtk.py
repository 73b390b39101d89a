"""The storage SCP against real dcmtk tools (and pynetdicom as a raw SCU for bad input)."""

from __future__ import annotations

import copy
import errno
import io
import json
import shutil
import sqlite3
import struct
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification

from node.app import Node
from node.ingest import incoming, part10, spool
from node.ingest.incoming import INFLATED_TWIN
from node.ingest.part10 import file_meta
from node.ingest.refusals import MALFORMED, SOP_CLASS_MISMATCH, SOP_INSTANCE_MISMATCH, UID_CONFLICT
from node.store import RECEIVING
from node.testing.loopback import LOOPBACK
from node.testing.synthetic import SyntheticStudy, write_ct_study
from tests.helpers import PYDICOM_TEST_FILES, dataset_bytes, get, metric_value, qoq_node, wait_for


@pytest.fixture
def node(make_node) -> Node:
    """A node that stores every SOP class (none ignored): these tests are about storage itself."""
    return make_node(dicom={"ignored_sop_classes": "[]"})

# (file, the storescu option that proposes its transfer syntax)
ENCODED_FILES = [
    ("SC_rgb_jpeg_dcmtk.dcm", "-xy"),  # JPEG baseline
    ("JPGExtended.dcm", "-xx"),  # JPEG extended (12 bit)
    ("MR_small_jpeg_ls_lossless.dcm", "-xt"),  # JPEG-LS lossless
    ("MR_small_jp2klossless.dcm", "-xv"),  # JPEG 2000 lossless
    ("JPEG2000.dcm", "-xw"),  # JPEG 2000
    ("MR_small_RLE.dcm", "-xr"),  # RLE lossless
    ("image_dfl.dcm", "-xd"),  # deflated explicit VR little endian
    ("MR_small_bigendian.dcm", "-xb"),  # explicit VR big endian (retired)
    ("MR_small_implicit.dcm", "-xi"),  # implicit VR little endian
    ("waveform_ecg.dcm", "-x="),  # 12-lead ECG waveform
    ("test-SR.dcm", "-x="),  # structured report
]


def kept_as(source: Path) -> tuple[bytes, str]:
    """What the node keeps of a file it is sent: its dataset and transfer syntax — a deflated dataset inflated,
    in its undeflated twin, so that no read inflates it again."""
    syntax = str(pydicom.dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    if syntax in INFLATED_TWIN:
        return zlib.decompress(dataset_bytes(source), -zlib.MAX_WBITS), INFLATED_TWIN[syntax]
    return dataset_bytes(source), syntax


def stored_path(node: Node, sop_instance_uid: str) -> Path:
    [path] = list((node.config.storage.root / "spool").glob(f"*/{sop_instance_uid}.dcm"))
    return path


def test_echo(node: Node, echoscu) -> None:
    result = echoscu(node.scp.port)
    assert result.returncode == 0, result.stderr
    assert "Received Echo Response (Success)" in result.stderr


def test_multi_series_study_is_stored_byte_for_byte_and_becomes_stable(node: Node, ct_study: SyntheticStudy,
                                                                       storescu) -> None:
    result = storescu(node.scp.port, list(ct_study.files))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Received Store Response (Success)") == len(ct_study.files)
    for source in ct_study.files:
        uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
        stored = pydicom.dcmread(stored_path(node, uid))
        assert stored == pydicom.dcmread(source)
        assert stored.file_meta.SourceApplicationEntityTitle == "STORESCU"
    study = wait_for(lambda: [s for s in node.store.studies.summaries() if s.state != RECEIVING])[0]
    assert (study.study_uid, study.instances, study.series, study.modalities) == (
        ct_study.study_uid, 10, 2, "CT")
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_cstore_requests_total", 'outcome="stored"') == 10
    assert metric_value(metrics, "qoqnode_study_transitions_total", 'state="stable"') == 1
    assert metric_value(metrics, "qoqnode_dicom_associations_total") == 1


@pytest.mark.parametrize(("name", "propose"), ENCODED_FILES)
def test_storescu_in_every_transfer_syntax(node: Node, name: str, propose: str, storescu) -> None:
    source = PYDICOM_TEST_FILES / name
    sent = pydicom.dcmread(source)
    result = storescu(node.scp.port, [source], propose)
    assert result.returncode == 0, result.stderr
    stored = pydicom.dcmread(stored_path(node, sent.SOPInstanceUID))
    assert stored.file_meta.TransferSyntaxUID == kept_as(source)[1]
    # dcmtk re-encodes what it sends (fragment padding, trailing padding): compare the
    # elements here; the byte-for-byte test below covers the pixel data.
    for ds in (stored, sent):
        ds.pop(0xFFFCFFFC, None)
        ds.pop(0x7FE00010, None)
    assert stored == sent


@pytest.mark.parametrize(("name", "propose"), ENCODED_FILES)  # one node each: the MR_small files share UIDs
def test_every_transfer_syntax_is_kept_byte_for_byte(node: Node, send_raw, name: str, propose: str) -> None:
    source = PYDICOM_TEST_FILES / name
    assert send_raw(node.scp.port, [source]) == [0]
    sent = pydicom.dcmread(source, stop_before_pixels=True)
    stored = stored_path(node, sent.SOPInstanceUID)
    stored_meta = pydicom.dcmread(stored, stop_before_pixels=True).file_meta
    assert (dataset_bytes(stored), stored_meta.TransferSyntaxUID) == kept_as(source)


def test_private_sop_class_is_accepted(node: Node, ct_study: SyntheticStudy, tmp_path: Path, send_raw) -> None:
    ds = pydicom.dcmread(ct_study.files[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.3.12.2.1107.5.9.1"  # a vendor's private class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    path = tmp_path / "private.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert send_raw(node.scp.port, [path]) == [0]
    assert dataset_bytes(stored_path(node, ds.SOPInstanceUID)) == dataset_bytes(path)


def test_calling_ae_allow_list_rejects_with_the_standard_reason(make_node, echoscu) -> None:
    node = make_node(dicom={"allowed_calling_ae_titles": "[PACS1]"})
    refused = echoscu(node.scp.port, "-aet", "INTRUDER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr
    allowed = echoscu(node.scp.port, "-aet", "PACS1")
    assert allowed.returncode == 0, allowed.stderr
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_dicom_associations_rejected_total", 'reason="calling_ae_not_allowed"') == 1


def test_wrong_called_ae_is_rejected(node: Node, echoscu) -> None:
    refused = echoscu(node.scp.port, called_ae="SOMEONEELSE")
    assert refused.returncode != 0
    assert "Called AE Title Not Recognized" in refused.stderr


def test_association_limit_rejects_transiently(make_node, echoscu) -> None:
    node = make_node(dicom={"max_associations": 2})
    scu = AE(ae_title="HOLDER")
    scu.add_requested_context(Verification)
    held = [scu.associate(LOOPBACK, node.scp.port, ae_title="QOQNODE") for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in held)
        refused = echoscu(node.scp.port)
        assert refused.returncode != 0
        assert "Local Limit Exceeded" in refused.stderr
    finally:
        for assoc in held:
            assoc.release()
    wait_for(lambda: node.scp.open_associations() == 0)
    assert echoscu(node.scp.port).returncode == 0


@pytest.fixture
def send_raw(monkeypatch: pytest.MonkeyPatch):
    """Send Part 10 files exactly as they are on disk (pynetdicom streams them without
    re-encoding) over one association; returns the C-STORE statuses."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)

    def send(port: int, files: list[Path]) -> list[int]:
        scu = AE(ae_title="RAWSCU")
        for path in files:
            meta = pydicom.filereader.read_file_meta_info(path)
            scu.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
        assoc = scu.associate(LOOPBACK, port, ae_title="QOQNODE")
        assert assoc.is_established
        try:
            return [int(assoc.send_c_store(path).Status) for path in files]
        finally:
            assoc.release()

    return send


def _broken_copies(source: Path, directory: Path) -> dict[str, Path]:
    raw = source.read_bytes()
    meta_end = len(raw) - len(dataset_bytes(source))
    dataset = raw[meta_end:]
    ds = pydicom.dcmread(source)
    # The command (from the file meta) names another instance than the dataset holds.
    uid = ds.SOPInstanceUID.encode()
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    variants = {
        "truncated": raw[: meta_end + len(dataset) // 2],
        "garbage": raw[:meta_end] + b"\x08\x00\x05\x00QQ\x0a\x00" + b"\xff" * 64,
        "mismatch": raw[:meta_end].replace(uid, other) + dataset,
        # The command says MR Image Storage; the dataset is a CT image.
        "class_mismatch": raw[:meta_end].replace(b"1.2.840.10008.5.1.4.1.1.2\x00", b"1.2.840.10008.5.1.4.1.1.4\x00")
        + dataset,
    }
    no_study = copy.deepcopy(ds)
    del no_study.StudyInstanceUID
    paths = {name: directory / f"{name}.dcm" for name in (*variants, "no_study")}
    for name, data in variants.items():
        paths[name].write_bytes(data)
    no_study.save_as(paths["no_study"], enforce_file_format=True)
    return paths


def test_bad_instances_get_failure_statuses_quarantine_and_the_association_goes_on(
    node: Node, ct_study: SyntheticStudy, tmp_path: Path, send_raw, echoscu
) -> None:
    good = ct_study.files[0]
    broken = _broken_copies(good, tmp_path)
    statuses = send_raw(node.scp.port, [broken["truncated"], broken["garbage"], broken["no_study"],
                                         broken["mismatch"], broken["class_mismatch"], good])
    assert statuses[:2] == [MALFORMED, MALFORMED]
    assert statuses[2] == 0xC211  # missing UID
    assert statuses[3] == SOP_INSTANCE_MISMATCH
    assert statuses[4] == SOP_CLASS_MISMATCH
    assert statuses[5] == 0x0000  # the same association still stores good data
    quarantined = sorted((node.config.storage.root / "quarantine").glob("*.json"))
    reasons = sorted(json.loads(p.read_text())["reason"] for p in quarantined)
    assert reasons == ["malformed", "malformed", "missing_uid", "sop_class_mismatch", "sop_instance_mismatch"]
    kept = sorted((node.config.storage.root / "quarantine").glob("*.dcm"))
    truncated = dataset_bytes(broken["truncated"])  # pynetdicom pads an odd length with one byte
    assert any(dataset_bytes(p).startswith(truncated) for p in kept)  # nothing lost
    assert len(node.store.quarantine.items()) == 5
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_cstore_failures_total", 'reason="malformed"') == 2
    assert echoscu(node.scp.port).returncode == 0


def test_duplicate_is_acknowledged_and_stored_once(node: Node, ct_study: SyntheticStudy, storescu) -> None:
    files = list(ct_study.files[:3])
    assert storescu(node.scp.port, files).returncode == 0
    again = storescu(node.scp.port, files)
    assert again.returncode == 0
    assert again.stderr.count("Received Store Response (Success)") == 3
    assert sum(s.instances for s in node.store.studies.summaries()) == 3
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_cstore_requests_total", 'outcome="duplicate"') == 3


def _in_another_study(source: Path, directory: Path) -> Path:
    """A copy of ``source`` under a new Study Instance UID, keeping its SOP Instance UID."""
    reused = pydicom.dcmread(source)
    reused.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.424242"
    path = directory / "reused.dcm"
    reused.save_as(path, enforce_file_format=True)
    return path


def _assert_refused_as_uid_conflict(node: Node, statuses: list[int], first: SyntheticStudy) -> None:
    assert statuses == [UID_CONFLICT]
    [note] = (node.config.storage.root / "quarantine").glob("*.json")
    assert json.loads(note.read_text())["reason"] == "uid_conflict"  # kept for a person to look at
    assert [s.study_uid for s in node.store.studies.summaries()] == [first.study_uid]
    assert [p.parent.name for p in (node.config.storage.root / "spool").glob("*/*.dcm")] == [first.study_uid]
    assert metric_value(node.metrics.render().decode(), "qoqnode_cstore_failures_total",
                        'reason="uid_conflict"') == 1


def test_a_sop_instance_uid_reused_in_another_study_is_refused_and_kept(
    node: Node, ct_study: SyntheticStudy, tmp_path: Path, send_raw, storescu
) -> None:
    assert storescu(node.scp.port, [ct_study.files[0]]).returncode == 0
    statuses = send_raw(node.scp.port, [_in_another_study(ct_study.files[0], tmp_path)])
    _assert_refused_as_uid_conflict(node, statuses, ct_study)
    [kept] = json.loads(_node_command(node, "quarantine", "--json").stdout)  # what an operator sees
    assert (kept["reason"], kept["calling_ae"]) == ("uid_conflict", "RAWSCU")
    assert kept["detail"] == "SOP Instance UID is already stored in another study"
    table = _node_command(node, "quarantine").stdout
    assert "uid_conflict" in table and Path(kept["path"]).name in table and "SYNTHETIC" not in table


def test_a_reused_sop_instance_uid_racing_its_twin_is_refused_and_its_file_removed(
    node: Node, ct_study: SyntheticStudy, tmp_path: Path, send_raw, monkeypatch: pytest.MonkeyPatch, storescu
) -> None:
    """Both copies pass the duplicate look-up before either is committed (two associations at once):
    the one committed second learns it from the commit and must not leave its file in the spool."""
    assert storescu(node.scp.port, [ct_study.files[0]]).returncode == 0
    look_up = node.store.instances.stored

    def not_yet_committed(uid: str):
        monkeypatch.setattr(node.store.instances, "stored", look_up)
        return None

    monkeypatch.setattr(node.store.instances, "stored", not_yet_committed)
    statuses = send_raw(node.scp.port, [_in_another_study(ct_study.files[0], tmp_path)])
    _assert_refused_as_uid_conflict(node, statuses, ct_study)


def test_full_disk_answers_out_of_resources_and_keeps_serving(make_node, ct_study: SyntheticStudy, storescu,
                                                              echoscu) -> None:
    node = make_node(storage={"min_free_bytes": shutil.disk_usage("/tmp").total})
    result = storescu(node.scp.port, [ct_study.files[0]])
    assert "Received Store Response (Refused: OutOfResources)" in result.stderr
    assert list((node.config.storage.root / "spool").iterdir()) == []  # nothing half-written
    assert node.store.studies.summaries() == []
    assert echoscu(node.scp.port).returncode == 0
    status, body = get(node, "/readyz")
    assert status == 503 and "min_free_bytes" in body
    assert metric_value(node.metrics.render().decode(), "qoqnode_cstore_failures_total",
                        'reason="out_of_space"') == 1


def test_storage_error_answers_out_of_resources_and_a_resend_succeeds(
    node: Node, ct_study: SyntheticStudy, storescu
) -> None:
    blocker = node.config.storage.root / "spool" / ct_study.study_uid
    blocker.write_bytes(b"")  # a file where the study's folder must go: every write fails
    failed = storescu(node.scp.port, [ct_study.files[0]])
    assert "Received Store Response (Refused: OutOfResources)" in failed.stderr
    assert node.store.studies.summaries() == []
    assert metric_value(node.metrics.render().decode(), "qoqnode_cstore_failures_total",
                        'reason="storage_error"') == 1
    blocker.unlink()  # the disk recovers; the sender retries
    assert storescu(node.scp.port, [ct_study.files[0]]).returncode == 0
    assert [s.instances for s in node.store.studies.summaries()] == [1]


def test_http_endpoints(node: Node) -> None:
    assert get(node, "/healthz")[0] == 200
    wait_for(lambda: get(node, "/startupz")[0] == 200)  # the (replay) model has loaded
    status, body = get(node, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    status, text = get(node, "/metrics")
    for name in ("qoqnode_dicom_associations_open", "qoqnode_cstore_duration_seconds_bucket",
                 "qoqnode_storage_free_bytes", "qoqnode_build_info"):
        assert name in text
    # Alerts count increases: the series they watch exist at 0 before the first event.
    assert 'qoqnode_cstore_failures_total{reason="uid_conflict"} 0.0' in text
    assert 'qoqnode_study_transitions_total{state="failed"} 0.0' in text
    assert get(node, "/nope")[0] == 404


@pytest.mark.usefixtures("dcmtk")
def test_parallel_associations(node: Node, tmp_path: Path, spawn) -> None:
    study = write_ct_study(tmp_path / "study", slices=24, size=32)
    groups = [list(study.files[i::4]) for i in range(4)]
    processes = [spawn(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.scp.port), *map(str, g)],
                                  stderr=subprocess.PIPE) for g in groups]
    assert [p.wait(120) for p in processes] == [0, 0, 0, 0]
    wait_for(lambda: node.store.studies.summaries() and node.store.studies.summaries()[0].state != RECEIVING)
    assert node.store.studies.summaries()[0].instances == 24


def _node_command(node: Node, *arguments: str) -> subprocess.CompletedProcess:
    """``qoq-node ARGUMENTS`` on the running node's storage."""
    return qoq_node(*arguments, env={"QOQ_NODE__STORAGE__ROOT": str(node.config.storage.root)})


def test_studies_command_lists_uids_not_patients(node: Node, ct_study: SyntheticStudy, storescu) -> None:
    storescu(node.scp.port, list(ct_study.files))
    listing = _node_command(node, "studies", "--json")
    [study] = json.loads(listing.stdout)
    assert study["study_uid"] == ct_study.study_uid and study["instances"] == 10
    table = _node_command(node, "studies")
    assert ct_study.study_uid in table.stdout and "CT" in table.stdout
    assert "SYNTHETIC" not in table.stdout + listing.stdout


def test_a_torn_copy_of_a_stored_instance_is_replaced_by_the_resend(node: Node, ct_study: SyntheticStudy,
                                                                    storescu) -> None:
    """A crash (power loss) after the row's commit but before the file's sync leaves a short file for
    an instance that was never acknowledged; the sender's resend must store it again, not be taken
    for a duplicate."""
    source = ct_study.files[0]
    assert storescu(node.scp.port, [source]).returncode == 0
    uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
    path = stored_path(node, uid)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    resent = storescu(node.scp.port, [source])
    assert "Received Store Response (Success)" in resent.stderr
    assert stored_path(node, uid).read_bytes() == whole
    assert [s.instances for s in node.store.studies.summaries()] == [1]
    assert metric_value(node.metrics.render().decode(), "qoqnode_cstore_requests_total", 'outcome="duplicate"') == 0


def test_a_file_that_cannot_be_synced_is_refused_and_not_recorded(
    node: Node, ct_study: SyntheticStudy, monkeypatch: pytest.MonkeyPatch, storescu
) -> None:
    sync = node.spool.sync

    def failing_once(path: Path) -> None:
        monkeypatch.setattr(node.spool, "sync", sync)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(node.spool, "sync", failing_once)
    failed = storescu(node.scp.port, [ct_study.files[0]])
    assert "Received Store Response (Refused: OutOfResources)" in failed.stderr
    assert node.store.studies.summaries() == []  # the row committed meanwhile was taken back
    assert storescu(node.scp.port, [ct_study.files[0]]).returncode == 0
    assert [s.instances for s in node.store.studies.summaries()] == [1]


def test_rows_of_torn_files_are_dropped_at_start(make_node, ct_study: SyntheticStudy, storescu) -> None:
    first = make_node(study={"stable_seconds": 3600})
    files = list(ct_study.files[:2])
    assert storescu(first.scp.port, files).returncode == 0
    first.stop(drain_seconds=5)
    torn_uid, kept_uid = (pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files)
    torn = stored_path(first, torn_uid)
    torn.write_bytes(torn.read_bytes()[:100])
    again = Node(first.config)
    assert again.torn_instances_forgotten == 1
    assert again.store.instances.stored(torn_uid) is None and again.store.instances.stored(kept_uid) is not None
    again.commits.stop()
    again.store.close()


def test_objects_the_node_does_not_read_are_acknowledged_and_let_go(make_node, ct_study: SyntheticStudy,
                                                                    storescu) -> None:
    """By default an SR (another system's report) is answered Success but neither stored nor a new
    version of its study; a study's images are stored as ever."""
    node = make_node()
    report = PYDICOM_TEST_FILES / "test-SR.dcm"
    assert storescu(node.scp.port, [report]).returncode == 0
    assert storescu(node.scp.port, list(ct_study.files[:2])).returncode == 0
    assert {s.study_uid for s in node.store.studies.summaries()} == {ct_study.study_uid}
    assert node.store.instances.stored(str(pydicom.dcmread(report, stop_before_pixels=True).SOPInstanceUID)) is None
    assert metric_value(node.metrics.render().decode(), "qoqnode_cstore_requests_total", 'outcome="ignored"') == 1


def _padded_file(path: Path, payload_bytes: int, deflate: bool = False) -> Path:
    """A Part 10 file of CT_small's identity whose dataset carries ``payload_bytes`` of zeros in a private
    element: in Explicit VR Little Endian, or deflated (a few kilobytes on the wire)."""
    ct = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    buffer = io.BytesIO()
    ds = pydicom.Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality"):
        setattr(ds, keyword, getattr(ct, keyword))
    ds.add_new(0x00091010, "OB", b"\x00" * payload_bytes)
    ds.add_new(0x00090010, "LO", "PADDING")
    encoded = pydicom.filebase.DicomFileLike(buffer)
    encoded.is_implicit_VR, encoded.is_little_endian = False, True
    pydicom.filewriter.write_dataset(encoded, ds)
    dataset, syntax = buffer.getvalue(), "1.2.840.10008.1.2.1"
    if deflate:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        dataset, syntax = compressor.compress(dataset) + compressor.flush(), "1.2.840.10008.1.2.1.99"
    path.write_bytes(file_meta(str(ct.SOPClassUID), str(ct.SOPInstanceUID), syntax, "PADDING") + dataset)
    return path


def test_a_deflate_bomb_and_an_oversized_dataset_are_refused_without_taking_the_memory(
        make_node, send_raw, tmp_path: Path) -> None:
    """A deflated dataset that inflates past dicom.max_inflated_bytes is refused A700 as it inflates (the
    node never holds more than the limit), and noted in the quarantine; so is an encoded dataset over
    dicom.max_instance_bytes."""
    node = make_node(dicom={"max_inflated_bytes": 4_000_000, "max_instance_bytes": 100_000})
    bomb = _padded_file(tmp_path / "bomb.dcm", 50_000_000, deflate=True)
    assert bomb.stat().st_size < 100_000  # small on the wire
    assert send_raw(node.scp.port, [bomb]) == [0xA700]
    assert send_raw(node.scp.port, [PYDICOM_TEST_FILES / "CT_small.dcm"]) == [0]  # 39 KB: under the limit
    big = write_ct_study(tmp_path / "big", slices=1, size=512)  # 512 KB of pixels
    assert send_raw(node.scp.port, list(big.files)) == [0xA700]
    reasons = [q.reason for q in node.store.quarantine.items()]
    assert reasons == ["too_large", "too_large"]
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_cstore_failures_total", 'reason="too_large"') == 2
    assert not list((node.config.storage.root / "tmp").iterdir())


def test_an_instance_is_received_into_its_file_not_into_memory(make_node, tmp_path: Path, storescu) -> None:
    """Past SPILL_BYTES each P-DATA fragment goes to disk as it arrives: a 30 MB instance is stored byte for byte
    while the node's allocations stay a fraction of its size (pynetdicom alone held it whole, and a copy); one over
    dicom.max_instance_bytes is refused A700 as it passes the limit, noted in the quarantine without its bytes,
    and nothing of it stays in tmp/."""
    node = make_node(dicom={"max_instance_bytes": 40_000_000})
    accepted = _padded_file(tmp_path / "accepted.dcm", 30_000_000)
    over = _padded_file(tmp_path / "over.dcm", 48_000_000)
    tracemalloc.start()
    try:
        stored = storescu(node.scp.port, [accepted])
        refused = storescu(node.scp.port, [over])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stored.returncode == 0 and "Received Store Response (Success)" in stored.stderr, stored.stderr
    assert "Received Store Response (Refused: OutOfResources)" in refused.stderr, refused.stderr
    assert peak < incoming.SPILL_BYTES + 4_000_000, f"{peak} bytes allocated while receiving"
    uid = pydicom.dcmread(accepted, stop_before_pixels=True).SOPInstanceUID
    assert dataset_bytes(stored_path(node, uid)) == dataset_bytes(accepted)
    [note] = node.store.quarantine.items()
    assert note.reason == "too_large" and Path(note.path).stat().st_size < 1000  # its File Meta only
    assert not list((node.config.storage.root / "tmp").iterdir())


def test_garbage_in_a_defined_length_item_and_file_meta_in_the_dataset_are_malformed() -> None:
    """The structural check walks defined-length sequences and items, and refuses group 0002 in the
    dataset (it once accepted both; the study was then skipped as "modality ''")."""
    explicit = "1.2.840.10008.1.2.1"
    header = b"".join(part10._element(0x0008, element, b"UI", part10._padded(uid, b"\x00"))
                      for element, uid in ((0x0016, "1.2.3"), (0x0018, "1.2.3.4")))
    garbage_item = b"\xfe\xff\x00\xe0" + struct.pack("<I", 8) + b"\x08\x00\x60\x00ZZ\x02\x00"
    sequence = b"\x08\x00\x15\x11SQ\x00\x00" + struct.pack("<I", len(garbage_item)) + garbage_item
    with pytest.raises(part10.MalformedDataset, match="invalid VR"):
        part10.read_header(header + sequence, explicit)
    good_item = b"\xfe\xff\x00\xe0" + struct.pack("<I", 10) + b"\x08\x00\x60\x00CS\x02\x00CT"
    good = b"\x08\x00\x15\x11SQ\x00\x00" + struct.pack("<I", len(good_item)) + good_item
    assert part10.read_header(header + good, explicit).sop_instance_uid == "1.2.3.4"
    meta_inside = part10._element(0x0002, 0x0010, b"UI", part10._padded(explicit, b"\x00"))
    with pytest.raises(part10.MalformedDataset, match="File Meta element"):
        part10.read_header(meta_inside + header, explicit)


@pytest.mark.parametrize("failure", ["write", "write_while_receiving", "commit"])
def test_a_failing_disk_answers_a700_and_leaves_nothing_behind(make_node, send_raw, monkeypatch, failure: str,
                                                                tmp_path: Path) -> None:
    """The disk fills as an instance is written (ENOSPC) — into the spool, or a large one into tmp/ as it
    arrives — or the database cannot commit its row: the C-STORE is answered A700 (the sender retries; C213
    told it to give up), neither file nor row stays, and /readyz says why until a write succeeds again."""
    node = make_node()
    study = write_ct_study(tmp_path / "ct", slices=1, size=2048 if failure == "write_while_receiving" else 64)
    assert (study.files[0].stat().st_size > incoming.SPILL_BYTES) == (failure == "write_while_receiving")
    if failure.startswith("write"):
        module, name = (incoming, "write_all") if failure == "write_while_receiving" else (spool, "_write_new_file")
        real = getattr(module, name)

        def full(*args, **kwargs):
            setattr(module, name, real)  # one failure, then the disk has room again
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(module, name, full)
    else:
        real_record = node.store.instances.record

        def full(records):
            node.store.instances.record = real_record
            raise sqlite3.OperationalError("database or disk is full")
        monkeypatch.setattr(node.store.instances, "record", full)
    assert send_raw(node.scp.port, list(study.files)) == [0xA700]
    assert not list((node.config.storage.root / "spool").rglob("*.dcm"))  # nothing half-written stays
    assert not list((node.config.storage.root / "tmp").iterdir())
    assert node.store.studies.summaries() == []
    status, body = get(node, "/readyz")
    assert status == 503 and "no room to store instances" in body
    assert send_raw(node.scp.port, list(study.files)) == [0]  # the sender's retry is stored
    assert len(list((node.config.storage.root / "spool").rglob("*.dcm"))) == 1
    assert get(node, "/readyz")[0] == 200  # a write went through: ready again
