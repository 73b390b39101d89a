"""The patient, not one study, on real peers: orders and labs over MLLP, priors and an ECG from Orthanc
(C-FIND / C-GET), the new study from Orthanc; the engine request (through a recording engine server
behind the openai backend) carries the priors, the reason and the labs, and the SR and ORU name them."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from node.chain import prepare_study
from node.config import DicomDestination
from node.context.gather import ContextGatherer, StudyIdentity
from node.context.pacs import PacsPriors
from node.egress.mllp import MllpClient
from node.engine import GenerationSettings
from node.engine.openai_server import EngineServer
from node.engine.replay import ReplayEngine
from node.engine.transformers_backend import TransformersEngine
from node.model.profiles import PROFILES
from node.reading import engine_request, read_batch
from node.results.hl7 import Hl7Party
from node.results.writer import write_results
from node.routing import DEFAULT_RULES, Router
from node.store import COMPLETE, POSTPONEMENT_DETAIL, Postponement, Store
from node.testing.ehr import MllpListener
from node.testing.loopback import LOOPBACK
from node.testing.pacs import Orthanc
from node.testing.synthetic import restamp, write_cr_study, write_ecg_study
from node.testing.synthetic_hl7 import LabValue, lab_message, merge_message, order_message
from tests.helpers import metric_value, node_config, sr_items, state, study_of, wait_for
from tests.reference import answer, lesion_model_box

TROPONIN = LabValue("10839-9", "Troponin I", "0.9", "ng/mL", "0-0.04", "H", "20260101100000")
BNP = LabValue("30934-4", "BNP", "912", "pg/mL", "0-100", "H", "20260101100000")


class RecordingEngine:
    """The replay engine, keeping every request it is given (what the model would have seen)."""

    def __init__(self, responses: dict[str, str]) -> None:
        self._replay = ReplayEngine(responses)
        self.requests: list = []

    def answer(self, text: str) -> None:
        """Answer every later request with ``text``."""
        self._replay = ReplayEngine({"*": text})

    @property
    def model_identity(self) -> str:
        """The replay engine's identity."""
        return self._replay.model_identity

    def generate(self, requests):
        """Record, then answer as the replay engine does."""
        self.requests.extend(requests)
        return self._replay.generate(requests)


@pytest.fixture
def recording():
    """A recording engine served as an OpenAI-compatible server on loopback."""
    engine = RecordingEngine({"*": "<think>compared with the prior</think> \\boxed{No Finding}"})
    server = EngineServer(LOOPBACK, 0, engine, "qoq-med", max_batch=4)
    server.start()
    yield engine, server.port
    server.stop()


def _send(port: int, message: str) -> str:
    """Send one message to the node's listener; the ACK code."""
    client = MllpClient(LOOPBACK, port, timeout_seconds=10)
    try:
        control = message.split("\r")[0].split("|")[9]
        return client.send(message, control).code
    finally:
        client.close()


def _cr(directory: Path, patient_id: str, accession: str, study_date: str, study_time: str = "120000"):
    return restamp(write_cr_study(directory, size=256), PatientID=patient_id, AccessionNumber=accession,
                   StudyDate=study_date, StudyTime=study_time)


def _sop(study) -> str:
    return str(pydicom.dcmread(study.files[0], stop_before_pixels=True).SOPInstanceUID)


def _sr_regions(sr) -> dict[str, int]:
    """How many image regions of the SR lie on each SOP instance."""
    return dict(Counter(str(item.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                        for item in sr_items(sr, "SCOORD")))


def _patient_key(study) -> str:
    """The patient key of a study's first instance (no default authority)."""
    return StudyIdentity.read(study.files[0], "").patient_key


def _engine(port: int) -> dict:
    return {"backend": "openai",
            "openai": {"url": f"http://{LOOPBACK}:{port}/v1", "served_model": "qoq-med", "retries": 0}}


def _listener() -> dict:
    return {"enabled": True, "host": LOOPBACK, "port": 0}


def test_the_whole_patient_goes_with_the_study(orthanc: Orthanc, make_node, recording, tmp_path: Path,
                                               dciodvfy_errors) -> None:
    """Orthanc holds a prior chest radiograph; an order and a troponin arrive over MLLP (and a BNP of
    another patient); Orthanc sends the new radiograph. The request carries both radiographs (the study's
    first), the reason and the troponin with unit, flag and timing; the SR in Orthanc references the prior;
    the ORU names it."""
    engine, engine_port = recording
    prior = _cr(tmp_path / "prior", "CTX-0001", "ACC-PRIOR", "20250601")
    current = _cr(tmp_path / "current", "CTX-0001", "ACC-NOW", "20260101")
    # a box on each image: the lesion now (image 0) and on the prior (image 1)
    engine.answer(answer("Mass", *(lesion_model_box(pydicom.dcmread(study.files[0])) for study in (current, prior))))
    for path in prior.files:
        orthanc.upload(path)
    with MllpListener() as ehr:
        destinations = {"dicom": [{"name": "pacs", "ae_title": "ORTHANC", "host": LOOPBACK, "port": orthanc.dicom_port,
                                   "timeout_seconds": 10}],
                        "hl7": [{"name": "ehr", "host": LOOPBACK, "port": ehr.port, "timeout_seconds": 2}],
                        "retry_base_seconds": 0.2, "retry_cap_seconds": 1}
        node = make_node(engine=_engine(engine_port), destinations=destinations, hl7_listener=_listener(),
                         context={"pacs": "pacs", "default_authority": "HOSP"})
        assert _send(node.hl7.port, order_message("ORD1", "CTX-0001", "ACC-NOW", "chest pain, rule out pneumonia",
                                                  "fever for 3 days")) == "AA"
        assert _send(node.hl7.port, lab_message("LAB1", "CTX-0001", [TROPONIN])) == "AA"
        assert _send(node.hl7.port, lab_message("LAB2", "CTX-9999", [BNP])) == "AA"  # another patient's
        orthanc.add_modality("qoqnode", "QOQNODE", node.scp.port)
        for path in current.files:
            orthanc.upload(path)
        orthanc.send_study(orthanc.study_id(current.study_uid), "qoqnode")
        wait_for(lambda: state(node, current.study_uid) == COMPLETE, timeout=90)
        wait_for(lambda: ehr.received, timeout=10)
        oru = ehr.received[-1]

    [request] = engine.requests
    assert len(request.images) == 2
    prompt = request.prompt
    assert prompt.startswith("<image>\n<image>\nClinical context:\n")
    assert "Reason for exam: chest pain, rule out pneumonia." in prompt
    assert "Clinical information: fever for 3 days." in prompt
    assert "- Troponin I (LN 10839-9): 0.9 ng/mL, high, reference range 0-0.04; 2 hours before the study." in prompt
    assert "Image 1: the current CR study of 2026-01-01." in prompt
    assert "Image 2: a prior CR study \"SYNTHETIC CHEST PA\" of 2025-06-01, 214 days before the current study." \
        in prompt
    assert "BNP" not in prompt  # another patient's lab
    assert prompt.index("Clinical context:") < prompt.index("Above is a chest X-ray image")

    found = [pydicom.dcmread(io.BytesIO(orthanc.file(i["ID"]))) for i in orthanc.instances(current.study_uid)]
    [sr] = [ds for ds in found if ds.Modality == "SR"]
    other = {str(item.StudyInstanceUID) for item in sr.PertinentOtherEvidenceSequence}
    assert prior.study_uid in other
    regions = _sr_regions(sr)
    assert set(regions) == {_sop(current), _sop(prior)}  # the prior's box is on the prior's instance
    [gsps] = [ds for ds in found if ds.Modality == "PR"]  # the presentation state: only the study's own image
    assert [str(r.ReferencedSOPInstanceUID) for s in gsps.ReferencedSeriesSequence
            for r in s.ReferencedImageSequence] == [_sop(current)]
    sr_path = tmp_path / "sr.dcm"
    sr.save_as(sr_path)
    assert dciodvfy_errors(sr_path) == []
    texts = [str(item.get("TextValue", "")) for container in sr.ContentSequence
             for item in container.get("ContentSequence", [])]
    assert any(f"prior CR study {prior.study_uid} of 2025-06-01" in text for text in texts)
    assert any("Reason for exam: chest pain" in text for text in texts)
    numbers = [item for container in sr.ContentSequence for item in container.get("ContentSequence", [])
               if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == "10839-9"]
    assert float(numbers[0].MeasuredValueSequence[0].NumericValue) == pytest.approx(0.9)

    parsed = parse_message(oru.replace("\n", "\r"), validation_level=VALIDATION_LEVEL.STRICT)
    inputs = [obx for obx in oru.split("\r") if obx.startswith("OBX") and "AI-INPUT" in obx]
    assert any(prior.study_uid in line for line in inputs) and parsed is not None

    text = node.metrics.render().decode()
    assert metric_value(text, "qoqnode_studies_read_total", 'context="with"') == 1
    assert metric_value(text, "qoqnode_context_priors_retrieved_total") == 1
    assert metric_value(text, "qoqnode_hl7_messages_received_total", 'outcome="accepted",type="ORU^R01"') == 2
    # the prior is kept apart: never a study of the node's own to read
    assert prior.study_uid not in {s.study_uid for s in node.store.studies.summaries()}


def test_a_study_waits_for_its_order_and_reads_it_when_it_comes(make_node, recording, tmp_path: Path, storescu) -> None:
    """The radiograph comes before its order: it waits (context.order_wait_seconds is an hour) and is read
    with the order as soon as the order arrives. A lab sent under the patient's old identifier follows
    the A40 merge to the new one."""
    engine, engine_port = recording
    node = make_node(engine=_engine(engine_port), hl7_listener=_listener(),
                     context={"order_wait_seconds": 3600, "default_authority": "HOSP"})
    assert _send(node.hl7.port, lab_message("LAB1", "OLD-ID", [TROPONIN])) == "AA"
    assert _send(node.hl7.port, merge_message("MRG1", "NEW-ID", "OLD-ID")) == "AA"
    study = _cr(tmp_path / "cr", "NEW-ID", "ACC-LATE", "20260101")
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    waiting = ("stable", POSTPONEMENT_DETAIL[Postponement.ORDER])
    wait_for(lambda: (s := study_of(node, study.study_uid)) and (s.state, s.detail) == waiting, timeout=30)
    assert not engine.requests
    assert _send(node.hl7.port, order_message("ORD1", "NEW-ID", "ACC-LATE", "suspected pneumothorax")) == "AA"
    # released by the order, not by the end of the wait (an hour away)
    wait_for(lambda: state(node, study.study_uid) == COMPLETE, timeout=30)
    [request] = engine.requests
    assert "Reason for exam: suspected pneumothorax." in request.prompt
    assert "Troponin I" in request.prompt  # the merged patient's lab


def test_a_study_whose_order_never_comes_is_read_without_it(make_node, recording, tmp_path: Path, storescu) -> None:
    engine, engine_port = recording
    node = make_node(engine=_engine(engine_port), hl7_listener=_listener(), context={"order_wait_seconds": 2})
    study = _cr(tmp_path / "cr", "LONELY-1", "ACC-NONE", "20260101")
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: state(node, study.study_uid) == COMPLETE, timeout=30)
    [request] = engine.requests
    assert "Clinical context" not in request.prompt and len(request.images) == 1
    text = node.metrics.render().decode()
    assert metric_value(text, "qoqnode_studies_read_total", 'context="without"') == 1


def test_an_omni_model_gets_the_ecg_the_pacs_holds_as_signal(orthanc: Orthanc, tmp_path: Path,
                                                             tiny_family_dir, dciodvfy_errors) -> None:
    """For the Omni family the ECG recorded near the radiograph, found in Orthanc and retrieved with
    C-GET, goes with the radiograph as the time series; the prompt says so; the tiny Omni model reads
    both; the SR references the ECG (a waveform of another study) and the ORU names it."""
    ecg = restamp(write_ecg_study(tmp_path / "ecg"), PatientID="ECG-0001", StudyDate="20260101", StudyTime="113000")
    for path in ecg.files:
        orthanc.upload(path)
    orthanc.add_modality("qoqnode", "QOQNODE", 104)  # the PACS answers queries of AEs it knows only
    current = _cr(tmp_path / "cr", "ECG-0001", "ACC-ECG", "20260101")
    config = node_config(tmp_path / "node")
    store = Store(tmp_path / "node" / "state.db")
    pacs = PacsPriors(DicomDestination(name="pacs", ae_title="ORTHANC", host=LOOPBACK, port=orthanc.dicom_port),
                      "QOQNODE")
    gatherer = ContextGatherer(store, tmp_path / "node", "", pacs)
    router = Router.from_file(DEFAULT_RULES)
    # a VL model takes no ECG: the PACS's ECG is not even retrieved for it, and its prompt names none
    plain = prepare_study(current.study_uid, list(current.files), router, config.imaging, PROFILES["qwen2.5-vl"],
                          gatherer)
    assert not plain.signals and "ECG" not in engine_request(plain, GenerationSettings()).prompt
    assert ecg.study_uid not in {s.study_uid for s in store.clinical.studies_of(_patient_key(current))}
    outcome = prepare_study(current.study_uid, list(current.files), router, config.imaging, PROFILES["omni"], gatherer)
    assert outcome.context.ecg is not None and outcome.context.ecg.study_uid == ecg.study_uid
    [signal] = outcome.signals
    assert signal.signal.shape == (8, 2500) and np.abs(signal.signal).max() > 0
    request = engine_request(outcome, GenerationSettings())
    assert len(request.time_series) == 1
    assert "ECG: the 12-lead ECG recorded 30 minutes before the study is given as the time series." in request.prompt
    store.close()

    engine = TransformersEngine(tiny_family_dir("omni"), device="cpu")
    [read] = read_batch([outcome], engine, GenerationSettings(max_new_tokens=8))
    assert read.findings is not None and read.model
    written = write_results(read, tmp_path / "out", {"oru": Hl7Party()})
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    ecg_uid = str(pydicom.dcmread(ecg.files[0], stop_before_pixels=True).SOPInstanceUID)
    waveforms = [item for item in sr.ContentSequence if item.ValueType == "WAVEFORM"]
    assert [str(w.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for w in waveforms] == [ecg_uid]
    assert ecg.study_uid in {str(item.StudyInstanceUID) for item in sr.PertinentOtherEvidenceSequence}
    assert dciodvfy_errors(tmp_path / "out" / "sr.dcm") == []
    oru = (tmp_path / "out" / "oru.hl7").read_text()
    assert f"ECG study {ecg.study_uid} of 2026-01-01 (signal)" in oru and written is not None
