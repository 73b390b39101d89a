"""A real-world corpus (issue 17): every readable DICOM file pydicom ships and dicom3tools' examples,
sent to a running node as each is encoded. Every one is answered, every study ends in a clear state
(complete, skipped or failed with its reason), and no file that a PACS (Orthanc) accepts is refused
by the node — except where the node's refusal is its documented policy, listed here with the reason."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pynetdicom import AE

from node.results.hl7 import NoPatientIdentifier
from node.results.writer import ResultSet
from node.store import COMPLETE, FAILED, SKIPPED
from node.testing.loopback import LOOPBACK
from node.testing.pacs import Orthanc
from tests.corpus import catch_all_router, corpus_results
from tests.helpers import LONGEST_WAIT_SECONDS, PYDICOM_TEST_FILES, wait_for

DICOM3TOOLS_EXAMPLES = Path("/usr/share/doc/dicom3tools/examples")
#: Media Storage Directory (DICOMDIR): a file-set's index, never sent over the network.
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
#: Refusals that are the node's policy (conformance statement 3.2.6), not a gap: the file reuses a SOP
#: Instance UID that another file of the corpus holds under another study (pydicom's MR_small variants,
#: its JPEG test images), which a PACS overwrites and the node refuses (C214) and keeps aside.
POLICY = {0xC214: "SOP Instance UID already stored under another study"}


def _corpus() -> list[Path]:
    """Every readable Part 10 file with a transfer syntax, a SOP class and a SOP instance (DICOMDIRs aside)."""
    files = []
    for path in sorted([*PYDICOM_TEST_FILES.rglob("*"), *DICOM3TOOLS_EXAMPLES.glob("*.dcm")]):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True) if path.is_file() else None
        except Exception:  # not readable DICOM: not part of the corpus
            continue
        if ds is not None and ds.file_meta.get("TransferSyntaxUID") and ds.get("SOPClassUID") \
                and ds.get("SOPInstanceUID") and ds.SOPClassUID != MEDIA_DIRECTORY:
            files.append(path)
    return files


def _send(port: int, path: Path, called_ae: str = "QOQNODE") -> int | None:
    """C-STORE one file as a PACS forwards it: its dataset in its own transfer syntax, the command naming
    the dataset's SOP class and instance; the status, None when it was not sent."""
    ds = pydicom.dcmread(path)
    ae = AE(ae_title="CORPUS")
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate(LOOPBACK, port, ae_title=called_ae)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(ds)
    except ValueError as exc:  # pydicom cannot write this dataset as it read it (SC_rgb_jpeg.dcm): nothing is sent
        assert str(exc) == "Failed to encode the supplied dataset", exc
        return None
    finally:
        assoc.release()
    return int(status.Status) if status else None


def test_every_real_world_file_is_answered_and_ends_in_a_clear_state(make_node, orthanc: Orthanc) -> None:
    corpus = _corpus()
    assert len(corpus) > 100
    node = make_node()
    answers = {path: _send(node.scp.port, path) for path in corpus}
    pacs_answers = {path: _send(orthanc.dicom_port, path, orthanc.aet) for path in corpus}
    in_pacs = {path for path, status in pacs_answers.items() if status == 0x0000}
    # a file the sender cannot encode reaches neither; every file that reached the PACS reached the node
    unanswered = [path.name for path, status in answers.items() if status is None and pacs_answers[path] is not None]
    assert not unanswered, f"no answer for {unanswered}"
    assert len(in_pacs) > 100
    gaps = {path.name: f"0x{status:04X}" for path, status in answers.items()
            if status and path in in_pacs and status not in POLICY}
    assert not gaps, f"Orthanc accepts, the node refuses: {gaps}"
    wait_for(lambda: all(s.state in {COMPLETE, SKIPPED, FAILED} for s in node.store.studies.summaries()),
             timeout=LONGEST_WAIT_SECONDS, interval=1, what="every corpus study settled")
    studies = node.store.studies.summaries()
    assert studies and all(s.detail for s in studies if s.state in {SKIPPED, FAILED})  # each says why


#: Result objects the node leaves out (and says so: ``ResultSet.omitted``), by file and kind, and why. Every one
#: but the first is a gap still open (issue 26), listed so that no other can appear unseen.
OMITTED = {
    ("693_J2KI.dcm", "seg"): "a CT image without the Frame of Reference its IOD requires: highdicom makes no SEG",
    **dict.fromkeys([("liver_1frame.dcm", "seg"), ("liver_expb_1frame.dcm", "seg")],
                    "an enhanced multi-frame image of one frame: highdicom counts no plane position for it"),
    **dict.fromkeys([(f"rtdose{variant}.dcm", kind)
                     for variant in ("", "_1frame", "_expb", "_expb_1frame", "_rle", "_rle_1frame")
                     for kind in ("seg", "presentation_state")],
                    "an RT Dose grid: highdicom expects the functional groups of an enhanced image"),
}


def _problems(result: ResultSet, dciodvfy_errors) -> list[str]:
    """What is wrong with one study's results: a DICOM object dciodvfy finds errors in, a SEG highdicom
    cannot read back, an ORU hl7apy's strict validation refuses."""
    problems = []
    for item in result.dicom:
        problems += [f"{item.path.name}: {error}" for error in dciodvfy_errors(item.path)]
        if item.path.name.startswith("seg"):
            try:
                hd.seg.segread(item.path)
            except Exception as exc:
                problems.append(f"{item.path.name}: highdicom cannot read it back: {type(exc).__name__}: {exc}")
    for path, _ in result.messages.values():
        try:
            parse_message(path.read_bytes().decode("utf-8"), validation_level=VALIDATION_LEVEL.STRICT,
                          find_groups=True).validate()
        except Exception as exc:
            problems.append(f"{path.name}: {type(exc).__name__}: {exc}")
    return problems


@pytest.mark.timeout(1800)
def test_every_result_object_from_the_corpus_passes_the_validators(tmp_path: Path, dciodvfy_errors,
                                                                   sr_validator_errors) -> None:
    """Every corpus file read through the replay engine (as the node reads a study: routed, imaged, read,
    its results written): every result object passes dciodvfy with no error, every SR and KOS pixelmed's
    DicomSRValidator, every SEG reads back in highdicom, every ORU passes hl7apy's strict validation (a source
    without a Patient ID gets none, item 22); no object is left out but those listed in OMITTED."""
    router = catch_all_router()
    problems: dict[str, list[str]] = {}
    documents = []
    for number, path in enumerate(_corpus()):
        try:
            result = corpus_results(path, tmp_path / f"{number}-{path.name}", router)
        except Exception as exc:  # the study would fail with its results unwritten
            problems[path.name] = [f"no results: {type(exc).__name__}: {exc}"]
            continue
        if result is None:
            continue
        problems[path.name] = [f"{kind} omitted: {type(error).__name__}: {error}" for kind, error in result.omitted
                               if (path.name, kind) not in OMITTED and not isinstance(error, NoPatientIdentifier)]
        problems[path.name] += _problems(result, dciodvfy_errors)
        documents += [item.path for item in result.dicom if item.path.name.startswith(("sr", "kos"))]
    assert len(problems) > 80 and len(documents) > 160
    for path, errors in sr_validator_errors(documents).items():
        problems[path.parent.name.split("-", 1)[1]] += [f"{path.name}: {error}" for error in errors]
    failing = [f"{name}: {problem}" for name, found in problems.items() for problem in found]
    assert not failing, "\n".join(failing)
