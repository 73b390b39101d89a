"""``qoq-node demo``: the whole loop on one machine in about a minute.

Starts a PACS on loopback (a real Orthanc when it is installed, else a built-in storage SCP that
writes to a folder), an MLLP listener as the EHR, and a node (``qoq-node serve``) whose replay
engine boxes the synthetic lesions; sends the patient's order (ORM^O01, with its reason for exam) and a
troponin result (ORU^R01) to the node's HL7 listener, as the RIS and the laboratory would, keeps a
prior chest radiograph in Orthanc for the node to retrieve, sends a chest CR and a CT study through
the PACS to the node, and prints what the model was given and where every result object and message
landed. Every result is labelled as a test result.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path

import pydicom

from node.egress.dicom import DicomSender
from node.egress.mllp import MllpClient
from node.ingest.hl7v2 import parse
from node.results.sr import CONTEXT
from node.store import COMPLETE, FAILED, SKIPPED, UNDELIVERED, Store, StudyState
from node.testing.ehr import MllpListener
from node.testing.loopback import LOOPBACK, free_port
from node.testing.node_process import NodeProcess
from node.testing.pacs import FolderPacs, Orthanc
from node.testing.synthetic import SyntheticStudy, boxed_response, restamp, write_cr_study, write_ct_study
from node.testing.synthetic_hl7 import LabValue, lab_message, order_message

RESULT_MODALITIES = {"SR": "structured report (TID 1500)", "SEG": "segmentation", "PR": "presentation state",
                     "OT": "key image, boxes burned in (SC)", "KO": "key object selection (key images)",
                     "DOC": "AI report (Encapsulated PDF)"}
FINAL_STATES = {COMPLETE, FAILED, SKIPPED, UNDELIVERED}


def _send(pacs: Orthanc | FolderPacs, node: NodeProcess, study: SyntheticStudy) -> None:
    """The PACS sends a study to the node (Orthanc routes it; without Orthanc the demo sends it)."""
    if isinstance(pacs, Orthanc):
        for path in study.files:
            pacs.upload(path)
        pacs.add_modality("qoqnode", "QOQNODE", node.dicom_port)
        pacs.send_study(pacs.study_id(study.study_uid), "qoqnode")
    else:
        DicomSender(pacs.aet, "QOQNODE", LOOPBACK, node.dicom_port).send([pydicom.dcmread(p) for p in study.files])


def _results_in_pacs(pacs: Orthanc | FolderPacs, study_uid: str) -> list[tuple[str, str, str]]:
    """(modality, SOP Instance UID, where) of each AI object the PACS holds for a study."""
    if isinstance(pacs, Orthanc):
        found = []
        for instance in pacs.instances(study_uid):
            ds = pydicom.dcmread(io.BytesIO(pacs.file(instance["ID"])), stop_before_pixels=True)
            if ds.Modality in RESULT_MODALITIES:
                found.append((ds.Modality, ds.SOPInstanceUID, f"stored in the PACS (AE {pacs.aet})"))
        return found
    found = []
    for path in sorted(pacs.folder.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.StudyInstanceUID == study_uid and ds.Modality in RESULT_MODALITIES:
            found.append((ds.Modality, ds.SOPInstanceUID, str(path)))
    return found


#: The synthetic patient's order and laboratory result, as the RIS and the LIS send them.
CONTEXT_MESSAGES = (
    ("order ORM^O01", order_message("DEMO-ORD-1", "SYN-0001", "SYN0001", "cough and fever for 3 days, rule out "
                                    "pneumonia", "smoker, COPD")),
    ("troponin result ORU^R01", lab_message("DEMO-LAB-1", "SYN-0001", [
        LabValue("10839-9", "Troponin I", "0.09", "ng/mL", "0-0.04", "H", "20260101100000")])),
)


def _send_context(port: int, say: Callable[[str], None]) -> None:
    """The RIS and the laboratory send the patient's order and lab result to the node's listener."""
    client = MllpClient(LOOPBACK, port)
    try:
        for name, message in CONTEXT_MESSAGES:
            answer = client.send(message, message.split("\r")[0].split("|")[9])
            say(f"sending the {name} to the node's HL7 listener ... {answer.code or answer.detail}")
    finally:
        client.close()


def _given(node: NodeProcess, study_uid: str) -> list[str]:
    """What the study's SR says the model was given besides the study's own images."""
    found = []
    for sr_path in sorted((node.root / "var" / "results" / study_uid).glob("v*/sr.dcm")):
        sr = pydicom.dcmread(sr_path)
        for container in sr.ContentSequence:
            if container.ConceptNameCodeSequence[0].CodeValue == CONTEXT.value:
                found += [str(item.TextValue) for item in container.ContentSequence if "TextValue" in item]
    return [line for text in found for line in text.split("\n")]


def oru_summary(message: str) -> list[str]:
    """What an interface analyst and a radiologist look at in the node's ORU^R01: its identifiers and status,
    the answer and each finding (a box, in the source image's pixels), and the label it carries."""
    oru = parse(message)
    msh, pid, obr, nte = (oru.first(name) for name in ("MSH", "PID", "OBR", "NTE"))
    status = {"P": "preliminary", "F": "final", "C": "corrected"}.get(oru.value(obr, 25), oru.value(obr, 25))
    lines = [f"ORU^R01 control ID {oru.value(msh, 10)}: patient (PID-3) {oru.value(pid, 3)}, order (OBR-2/3) "
             f"{oru.value(obr, 2)}/{oru.value(obr, 3)}, service (OBR-4) {oru.value(obr, 4, 2)}, result status "
             f"(OBR-25) {status}"]
    for obx in (segment for segment in oru.segments if segment[0] == "OBX"):
        observation = oru.value(obx, 3)
        if observation == "AI-ANSWER":
            lines.append(f"answer   {oru.value(obx, 5, 2)} ({oru.value(obx, 5, 3)} {oru.value(obx, 5)})")
        elif observation == "AI-FINDING":
            lines.append(f"finding  {oru.value(obx, 5)}")
    lines.append(f"label    {oru.value(nte, 3)}")
    return lines


def _wait_final(store_path: Path, study_uids: list[str], timeout: float) -> dict[str, StudyState]:
    deadline = time.monotonic() + timeout
    while True:
        store = Store(store_path)
        try:
            states = {s.study_uid: s.state for s in store.studies.summaries()}
        finally:
            store.close()
        if all(states.get(uid) in FINAL_STATES for uid in study_uids) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def run_demo(workdir: Path, keep_running: bool = False, say: Callable[[str], None] = print) -> int:
    """Run the demo under ``workdir``; 0 when every study's results reached the PACS and the EHR."""
    studies_dir = workdir / "studies"
    cr = write_cr_study(studies_dir / "cr", size=1024)
    prior = restamp(write_cr_study(studies_dir / "prior", size=1024), StudyDate="20250301", AccessionNumber="SYN0000")
    ct = write_ct_study(studies_dir / "ct", slices=24, size=256)
    # recorded answers among each task's trained options, boxing the lesion of the image the task reads
    # (the chest CT task reads the middle slice, as its training set gave one slice)
    responses = {"chest_xray": boxed_response(pydicom.dcmread(cr.files[0]), "Lung Lesion"),
                 "ct": boxed_response(pydicom.dcmread(ct.files[len(ct.files) // 2]), "Acute PE")}
    with ExitStack() as stack:
        if shutil.which("Orthanc"):
            orthanc = stack.enter_context(Orthanc(workdir / "pacs"))
            say(f"PACS: Orthanc on {LOOPBACK}:{orthanc.dicom_port} (AE {orthanc.aet}), its data in "
                f"{orthanc.workdir / 'db'}" + (f", web viewer {orthanc.url}/app/explorer.html" if keep_running else ""))
            pacs: Orthanc | FolderPacs = orthanc
        else:
            pacs = stack.enter_context(FolderPacs(workdir / "pacs"))
            say(f"PACS: built-in storage SCP on {LOOPBACK}:{pacs.dicom_port} (AE {pacs.aet}), "
                f"writing to {pacs.folder} (install Orthanc for a real one)")
        ehr = stack.enter_context(MllpListener())
        say(f"EHR: MLLP listener on {LOOPBACK}:{ehr.port}, acknowledging every message with AA")
        destinations = {"dicom": [{"name": "pacs", "ae_title": pacs.aet, "host": LOOPBACK, "port": pacs.dicom_port}],
                        "hl7": [{"name": "ehr", "host": LOOPBACK, "port": ehr.port}]}
        hl7_port = free_port()
        context = {"default_authority": "HOSP", "pacs": "pacs" if isinstance(pacs, Orthanc) else None}
        node = stack.enter_context(NodeProcess(workdir / "node", {
            "QOQ_NODE__STUDY__STABLE_SECONDS": "1", "QOQ_NODE__DESTINATIONS": json.dumps(destinations),
            "QOQ_NODE__HL7_LISTENER": json.dumps({"enabled": True, "host": LOOPBACK, "port": hl7_port}),
            "QOQ_NODE__CONTEXT": json.dumps(context)}, replay=responses))
        say(f"node: AE QOQNODE on {LOOPBACK}:{node.dicom_port}, HL7 listener on {LOOPBACK}:{hl7_port}, metrics at "
            f"{node.url}/metrics, log {node.log_path}; engine: replay (recorded answers boxing the synthetic lesions)")
        if isinstance(pacs, Orthanc):
            for path in prior.files:
                pacs.upload(path)
            say(f"the PACS holds a prior chest radiograph of the patient (2025-03-01, study {prior.study_uid})")
        _send_context(hl7_port, say)
        started = time.monotonic()
        for name, study in (("chest CR", cr), ("CT, 24 slices", ct)):
            say(f"sending the {name} study from the PACS to the node ...")
            _send(pacs, node, study)
        states = _wait_final(node.root / "var" / "state.db", [cr.study_uid, ct.study_uid], timeout=180)
        say(f"done in {time.monotonic() - started:.1f} s (a study counts as complete after 1 s without new instances)")
        ok = True
        for name, study in (("chest CR", cr), ("CT", ct)):
            state = states.get(study.study_uid, "not received")
            ok &= state == COMPLETE
            say(f"\n{name} study {study.study_uid}: {state}")
            for line in _given(node, study.study_uid):
                say(f"  given {line}")
            for modality, uid, where in _results_in_pacs(pacs, study.study_uid):
                say(f"  PACS  {RESULT_MODALITIES[modality]:<28} {uid}  {where}")
            for message in ehr.received:
                if study.study_uid in message:
                    first, *rest = oru_summary(message)
                    say(f"  EHR   {first}")
                    for line in rest:
                        say(f"        {line}")
        say(f"\nresults on the node: {node.root / 'var' / 'results'}; every object and message is labelled "
            "AI RESULT - RESEARCH USE ONLY (TEST MODEL)")
        if isinstance(pacs, Orthanc) and not keep_running:
            say("(the PACS stops with the demo: --keep-running leaves it up to browse)")
        if keep_running:
            say("running until Ctrl-C ...")
            with suppress(KeyboardInterrupt):
                threading.Event().wait()
    return 0 if ok else 1
