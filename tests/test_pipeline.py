"""The whole loop in one process: Orthanc (the PACS) → node → Orthanc + an MLLP listener (the EHR),
with the replay engine boxing the synthetic lesion; outages, NAKs, failures and late instances."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from node.store import COMPLETE, DEAD, FAILED, SENT, UNDELIVERED
from node.testing.ehr import MllpListener
from node.testing.loopback import LOOPBACK, free_port
from node.testing.pacs import Orthanc
from node.testing.synthetic import (
    SyntheticStudy,
    write_cr_study,
    write_ct_study,
    write_file,
)
from tests.helpers import (
    assert_on_lesion,
    get,
    metric_value,
    qoq_node,
    replay_engine,
    sr_box,
    state,
    wait_for,
)
from tests.reference import answer, lesion_answer, lesion_model_box


def _destinations(pacs: Orthanc | None, pacs_port: int = 0, **hl7_ports: int) -> dict:
    dicom = [{"name": "pacs", "ae_title": "ORTHANC", "host": LOOPBACK, "port": pacs.dicom_port if pacs else pacs_port,
              "timeout_seconds": 5}]
    hl7 = [{"name": name, "host": LOOPBACK, "port": port, "timeout_seconds": 1, "sending_facility": "RAD-A"}
           for name, port in hl7_ports.items()]
    return {"dicom": dicom, "hl7": hl7, "retry_base_seconds": 0.2, "retry_cap_seconds": 1}


def _send_through(orthanc: Orthanc, node, study: SyntheticStudy) -> None:
    """Upload a study to Orthanc and have Orthanc C-STORE it to the node, as a PACS routes a study."""
    for path in study.files:
        orthanc.upload(path)
    orthanc.add_modality("qoqnode", "QOQNODE", node.scp.port)
    orthanc.send_study(orthanc.study_id(study.study_uid), "qoqnode")


def _cr_read_through(orthanc: Orthanc, make_node, tmp_path: Path, ehr: MllpListener):
    """A node (replay boxing the lesion) that read a chest CR Orthanc sent it, delivering to Orthanc and
    ``ehr``: (node, study), once the study is complete."""
    cr = write_cr_study(tmp_path / "cr", size=512)
    responses = {"chest_xray": lesion_answer(pydicom.dcmread(cr.files[0]), "Mass")}
    node = make_node(engine=replay_engine(tmp_path, responses), destinations=_destinations(orthanc, ehr=ehr.port))
    _send_through(orthanc, node, cr)
    wait_for(lambda: state(node, cr.study_uid) == COMPLETE, timeout=60)
    return node, cr


def _results_in_pacs(orthanc: Orthanc, study_uid: str) -> dict[str, list[pydicom.Dataset]]:
    """The AI objects Orthanc holds for a study, by modality (SR, SEG, PR, KO, OT for secondary captures and DOC
    for the AI report)."""
    found: dict[str, list[pydicom.Dataset]] = {}
    for instance in orthanc.instances(study_uid):
        ds = pydicom.dcmread(io.BytesIO(orthanc.file(instance["ID"])))
        if ds.Modality in {"SR", "SEG", "PR", "OT", "KO", "DOC"}:
            found.setdefault(ds.Modality, []).append(ds)
    return found


def test_cr_and_ct_results_reach_the_pacs_and_the_ehr(orthanc: Orthanc, make_node, tmp_path: Path) -> None:
    cr = write_cr_study(tmp_path / "cr", size=512)
    ct = write_ct_study(tmp_path / "ct", slices=3, size=128)
    responses = {"chest_xray": lesion_answer(pydicom.dcmread(cr.files[0]), "Mass"),
                 "ct": lesion_answer(pydicom.dcmread(ct.files[0]), "Nodule")}
    with MllpListener() as ehr:
        node = make_node(engine=replay_engine(tmp_path, responses), destinations=_destinations(orthanc, ehr=ehr.port))
        for study in (cr, ct):
            _send_through(orthanc, node, study)
        for study in (cr, ct):
            wait_for(lambda study=study: state(node, study.study_uid) == COMPLETE, timeout=60)
        sources = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, cr.files + ct.files)}
        for study in (cr, ct):
            found = _results_in_pacs(orthanc, study.study_uid)
            # and a burned-in key image (SC, Modality OT) of the radiograph (no patient geometry), not of the CT
            assert {kind: len(objects) for kind, objects in found.items()} == {
                "SR": 1, "SEG": 1, "PR": 1, "KO": 1, "DOC": 1, **({"OT": 1} if study is cr else {})}
            [sr], [seg], [gsps] = found["SR"], found["SEG"], found["PR"]
            referenced, points = sr_box(sr)
            assert_on_lesion(points, sources[referenced])  # the box the radiologist sees is on the lesion
            [graphic] = [g for a in gsps.GraphicAnnotationSequence for g in a.get("GraphicObjectSequence", [])]
            assert gsps.GraphicAnnotationSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == referenced
            assert_on_lesion(list(graphic.GraphicData), sources[referenced])
            rows, columns = np.nonzero(seg.pixel_array.reshape(-1, *seg.pixel_array.shape[-2:])[0])
            mask_box = [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]
            assert_on_lesion([mask_box[0], mask_box[1], mask_box[2], mask_box[3]], sources[referenced])
            assert "RESEARCH USE" in sr.SeriesDescription and "TEST" in sr.SeriesDescription
        # The EHR got one strictly valid ORU^R01 per study, naming it and its SR.
        assert len(ehr.received) == 2
        for message in ehr.received:
            assert parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
        by_study = {study.study_uid: next(m for m in ehr.received if study.study_uid in m) for study in (cr, ct)}
        assert "4147007^Mass^SCT" in by_study[cr.study_uid] and "27925004^Nodule^SCT" in by_study[ct.study_uid]
        assert by_study[cr.study_uid].split("\r")[0].split("|")[3] == "RAD-A"  # MSH-4 from the destination
        metrics = node.metrics.render().decode()
        assert metric_value(metrics, "qoqnode_stage_duration_seconds_count", 'stage="end_to_end"') == 2
        # each study's SR, SEG, PR, KO and PDF report, and the CR's SC
        assert metric_value(metrics, "qoqnode_outbox_items", 'destination="pacs",state="sent"') == 11
        assert metric_value(metrics, "qoqnode_outbox_items", 'destination="ehr",state="sent"') == 2
        assert metric_value(metrics, "qoqnode_studies", 'state="complete"') == 2


@pytest.mark.usefixtures("dcmtk", "orthanc_installed")
def test_outages_naks_and_silence_are_retried_and_rejections_dead_lettered(make_node, tmp_path: Path) -> None:
    """The PACS is down at first; one EHR NAKs twice, one is silent once, one rejects."""
    ct = write_ct_study(tmp_path / "ct", slices=2, size=64)
    pacs_port = free_port()
    responses = {"ct": lesion_answer(pydicom.dcmread(ct.files[0]), "Mass")}
    with MllpListener(["AE", "AE"]) as flaky, MllpListener(["silent"]) as silent, MllpListener(["AR"]) as rejecting:
        node = make_node(engine=replay_engine(tmp_path, responses), destinations=_destinations(
            None, pacs_port, flaky=flaky.port, silent=silent.port, rejecting=rejecting.port))
        subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.scp.port), *map(str, ct.files)], check=True,
                       capture_output=True)
        # PACS down: its items wait and are retried; the EHRs are not held up by it.
        wait_for(lambda: [i for i in node.store.outbox.items() if i.destination == "pacs" and i.attempts >= 2],
                 timeout=30)
        wait_for(lambda: len(flaky.received) == 3 and len(silent.received) == 2, timeout=30)
        with Orthanc(tmp_path / "pacs", dicom_port=pacs_port) as pacs:
            wait_for(lambda: all(i.state != "pending" for i in node.store.outbox.items()), timeout=30)
            found = _results_in_pacs(pacs, ct.study_uid)
            assert {kind: len(objects) for kind, objects in found.items()} == {"SR": 1, "SEG": 1, "PR": 1, "KO": 1,
                                                                                  "DOC": 1}
        items = {i.destination: i for i in node.store.outbox.items() if i.kind == "hl7"}
        assert (items["flaky"].state, items["flaky"].attempts) == (SENT, 3)  # AE, AE, AA: delivered once accepted
        assert (items["silent"].state, items["silent"].attempts) == (SENT, 2)  # no ACK in time, then AA
        assert len(set(flaky.received)) == 1  # the same message (same MSH-10) every time
        assert items["rejecting"].state == DEAD and "AR" in items["rejecting"].last_error
        assert state(node, ct.study_uid) == UNDELIVERED
        metrics = node.metrics.render().decode()
        assert metric_value(metrics, "qoqnode_outbox_items", 'destination="rejecting",state="dead"') == 1
        assert metric_value(metrics, "qoqnode_outbox_attempts_total", 'destination="flaky",outcome="retry"') == 2
        # The operator sees the dead letter and sends it again once the EHR is fixed.
        env = {"QOQ_NODE__STORAGE__ROOT": str(node.config.storage.root)}
        listing = qoq_node("outbox", "list", "--state", "dead", env=env)
        assert "rejecting" in listing.stdout and "rejected by the receiver" in listing.stdout
        qoq_node("outbox", "retry", str(items["rejecting"].id), env=env)
        node.workers[-1].wake()
        wait_for(lambda: state(node, ct.study_uid) == COMPLETE, timeout=30)
        assert len(rejecting.received) == 2


@pytest.mark.usefixtures("dcmtk")
def test_a_study_that_cannot_be_read_is_parked_as_failed_at_once(make_node, tmp_path: Path) -> None:
    """Its data is at fault (the pixel data do not fit the header): the next try would fail the same way,
    so the study is failed after one attempt, with a reason that quotes none of its values."""
    ct = write_ct_study(tmp_path / "ct", slices=1, size=64)
    broken = pydicom.dcmread(ct.files[0])
    broken.Rows = broken.Columns = 128  # the pixel data is for 64 × 64: undecodable
    broken.save_as(ct.files[0])
    node = make_node(pipeline={"max_attempts": 2, "retry_seconds": 0.2})
    subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.scp.port), str(ct.files[0])], check=True,
                   capture_output=True)
    wait_for(lambda: state(node, ct.study_uid) == FAILED, timeout=30)
    [study] = node.store.studies.summaries()
    assert study.attempts == 1 and study.detail.startswith("cannot decode")  # why it failed, for the operator
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_pipeline_failures_total", 'stage="imaging"') == 1
    assert metric_value(metrics, "qoqnode_studies", 'state="failed"') == 1
    # The node goes on: a readable study after it is read.
    good = write_ct_study(tmp_path / "good", slices=1, size=64)
    subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.scp.port), str(good.files[0])], check=True,
                   capture_output=True)
    wait_for(lambda: state(node, good.study_uid) == COMPLETE, timeout=30)


def test_an_unexpected_error_in_results_is_retried_then_failed_with_its_type(make_node, tmp_path: Path, storescu,
                                                                           monkeypatch) -> None:
    """A bug in a results builder (a RuntimeError that quotes a value) is not the data's fault: the study is
    tried ``pipeline.max_attempts`` times, then failed with the error's type and none of its message."""
    import node.scheduler

    calls = []

    def broken(*_args, **_kwargs):
        calls.append(time.monotonic())
        raise RuntimeError("QUAGGAMARE")

    monkeypatch.setattr(node.scheduler, "write_results", broken)
    ct = write_ct_study(tmp_path / "ct", slices=1, size=64)
    node = make_node(pipeline={"max_attempts": 3, "retry_seconds": 0.05})
    assert storescu(node.scp.port, [ct.files[0]]).returncode == 0
    wait_for(lambda: state(node, ct.study_uid) == FAILED, timeout=60)
    [study] = node.store.studies.summaries()
    assert study.attempts == 3  # retried, not settled at once
    # results were built 3 times, each retry after retry_seconds doubled per earlier try (0.05 s, then 0.1 s)
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.045 and calls[2] - calls[1] >= 0.09
    assert study.detail.startswith("results failed: RuntimeError") and "QUAGGAMARE" not in study.detail
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_pipeline_failures_total", 'stage="results"') == 3
    # Once the bug is fixed, the operator reads the failed study again: it completes.
    monkeypatch.undo()
    env = {"QOQ_NODE__STORAGE__ROOT": str(node.config.storage.root)}
    unknown = qoq_node("studies", "retry", "1.2.3.4", env=env, check=False)
    assert unknown.returncode == 1 and "1.2.3.4 is not failed" in unknown.stderr
    again = qoq_node("studies", "retry", ct.study_uid, env=env, check=False)
    assert again.returncode == 0 and "1 failed study(ies) will be read again" in again.stdout, again.stderr
    node.scheduler.wake()
    wait_for(lambda: state(node, ct.study_uid) == COMPLETE, timeout=60)


@pytest.mark.usefixtures("dcmtk")
def test_late_instances_make_a_new_result_that_supersedes_the_first(orthanc: Orthanc, make_node,
                                                                    tmp_path: Path) -> None:
    ct = write_ct_study(tmp_path / "ct", slices=3, size=64)
    responses = {"ct": lesion_answer(pydicom.dcmread(ct.files[0]), "Mass")}
    with MllpListener() as ehr:
        node = make_node(engine=replay_engine(tmp_path, responses), destinations=_destinations(orthanc, ehr=ehr.port))
        store = ["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.scp.port)]
        subprocess.run([*store, *map(str, ct.files[:2])], check=True, capture_output=True)
        wait_for(lambda: state(node, ct.study_uid) == COMPLETE, timeout=30)
        subprocess.run([*store, str(ct.files[2])], check=True, capture_output=True)  # a late slice
        wait_for(lambda: node.store.studies.summaries()[0].version == 2 and state(node, ct.study_uid) == COMPLETE,
                 timeout=30)
        found = _results_in_pacs(orthanc, ct.study_uid)
        assert len(found["SR"]) == 2
        first, second = sorted(found["SR"], key=lambda sr: "PredecessorDocumentsSequence" in sr)
        predecessor = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert predecessor.ReferencedSOPInstanceUID == first.SOPInstanceUID
        assert len(ehr.received) == 2
        headers = [message.split("\r")[0].split("|") for message in ehr.received]
        assert headers[0][9] != headers[1][9]  # a new result, a new control ID
        obr = [next(s for s in message.split("\r") if s.startswith("OBR|")).split("|") for message in ehr.received]
        assert (obr[0][25], obr[1][25]) == ("P", "C")  # the second corrects the first (same order)
        assert obr[0][3] == obr[1][3]


@pytest.mark.usefixtures("dcmtk")
def test_a_model_that_cannot_load_keeps_the_node_receiving_but_not_ready(make_node, tmp_path: Path) -> None:
    node = make_node(engine={"model": tmp_path / "no-such-model"})
    wait_for(lambda: get(node, "/startupz")[0] == 200)  # start-up is over ...
    status, body = get(node, "/readyz")
    assert status == 503 and "model failed to load" in body  # ... but the node is not ready, and says why
    assert metric_value(node.metrics.render().decode(), "qoqnode_model_loaded") == 0
    ct = write_ct_study(tmp_path / "ct", slices=1, size=32)
    subprocess.run(["storescu", "-aec", "QOQNODE", LOOPBACK, str(node.scp.port), str(ct.files[0])], check=True,
                   capture_output=True)  # studies are still received and kept for when the model is fixed
    wait_for(lambda: state(node, ct.study_uid) == "stable")


def _two_view_cr(directory: Path) -> SyntheticStudy:
    """A chest CR series of two same-sized views (PA, lateral), the lesion in the same place on both."""
    study = write_cr_study(directory, size=512)
    lateral = pydicom.dcmread(study.files[0])
    lateral.SOPInstanceUID = lateral.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    lateral.InstanceNumber, lateral.ViewPosition = 2, "LL"
    write_file(lateral, directory / "lateral.dcm")
    return SyntheticStudy(study.study_uid, study.series_uids, (*study.files, directory / "lateral.dcm"))


def _boxes_on_both_views(source: pydicom.Dataset) -> str:
    """A model answer boxing the lesion on input image 0 and on input image 1."""
    box = lesion_model_box(source)
    return answer("Mass", box, box, reasoning="Seen on both views.")


def test_a_two_view_radiograph_gets_a_seg_on_each_view(orthanc: Orthanc, make_node, tmp_path: Path) -> None:
    cr = _two_view_cr(tmp_path / "cr")
    sources = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, cr.files)}
    responses = {"chest_xray": _boxes_on_both_views(next(iter(sources.values())))}
    node = make_node(engine=replay_engine(tmp_path, responses), destinations=_destinations(orthanc))
    _send_through(orthanc, node, cr)
    wait_for(lambda: state(node, cr.study_uid) == COMPLETE, timeout=60)
    found = _results_in_pacs(orthanc, cr.study_uid)
    assert {kind: len(objects) for kind, objects in found.items()} == {"SR": 1, "SEG": 2, "PR": 1, "OT": 2, "KO": 1,
                                                                      "DOC": 1}
    on_views = set()
    for seg in found["SEG"]:
        [frame] = seg.PerFrameFunctionalGroupsSequence
        view = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        rows, columns = np.nonzero(seg.pixel_array)
        assert_on_lesion([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1], sources[view])
        on_views.add(view)
    assert on_views == set(sources)


def test_a_seg_that_cannot_be_made_leaves_the_report_and_the_oru_going(
    orthanc: Orthanc, make_node, tmp_path: Path, monkeypatch
) -> None:
    def refuse(*_args, **_kwargs):
        raise ValueError("this source cannot be segmented")

    monkeypatch.setattr("node.results.writer.build_segs", refuse)
    with MllpListener() as ehr:
        node, cr = _cr_read_through(orthanc, make_node, tmp_path, ehr)
        assert {kind: len(objects) for kind, objects in _results_in_pacs(orthanc, cr.study_uid).items()} == {
            "SR": 1, "PR": 1, "OT": 1, "KO": 1, "DOC": 1}
        assert len(ehr.received) == 1 and cr.study_uid in ehr.received[0]
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_result_objects_omitted_total", 'kind="seg"') == 1
    assert metric_value(metrics, "qoqnode_pipeline_failures_total", 'stage="results"') == 0


def test_a_pacs_that_sends_the_whole_study_back_makes_no_loop(make_node, orthanc: Orthanc, tmp_path: Path) -> None:
    """Orthanc forwards the whole study — the source and the node's own results — back to the node three
    times, as a "send to AI" rule would: the results are acknowledged and let go, the source instances are
    duplicates, so the study stays at version 1 with one read and one ORU."""
    with MllpListener() as ehr:
        node, cr = _cr_read_through(orthanc, make_node, tmp_path, ehr)
        results = _results_in_pacs(orthanc, cr.study_uid)
        assert len(results) >= 4  # SR, SEG, PR, KO, SC, the PDF report
        sent_back = len(cr.files) + sum(len(objects) for objects in results.values())

        def answered(outcome: str) -> float:
            return metric_value(node.metrics.render().decode(), "qoqnode_cstore_requests_total",
                                f'outcome="{outcome}"')

        def transitions(state: str) -> float:
            return metric_value(node.metrics.render().decode(), "qoqnode_study_transitions_total",
                                f'state="{state}"')

        stored, receiving = answered("stored"), transitions("receiving")
        for _ in range(3):
            orthanc.send_study(orthanc.study_id(cr.study_uid), "qoqnode")
        # Every instance sent back has been answered. Each was judged as it was answered: a new instance
        # would have been counted as stored and started version 2 (receiving) right then.
        wait_for(lambda: answered("own_result") + answered("duplicate") + answered("stored") - stored
                 == 3 * sent_back, timeout=30)
        assert answered("own_result") == 3 * (sent_back - len(cr.files))
        assert (answered("stored"), transitions("receiving")) == (stored, receiving)  # no new version began
        [study] = [s for s in node.store.studies.summaries() if s.study_uid == cr.study_uid]
        assert (study.version, study.state) == (1, COMPLETE)
        assert len(ehr.received) == 1
        assert answered("duplicate") == 3  # the CR itself, each time


def test_a_study_with_nowhere_to_deliver_counts_as_complete(make_node, tmp_path: Path, storescu) -> None:
    """Without destinations a read study is complete at once, and the complete transition is counted
    (it stayed at 0, so an alert or dashboard on completed studies saw nothing)."""
    node = make_node()
    cr = write_cr_study(tmp_path / "cr", size=256)
    assert storescu(node.scp.port, list(cr.files)).returncode == 0
    wait_for(lambda: state(node, cr.study_uid) == COMPLETE, timeout=60)
    metrics = node.metrics.render().decode()
    assert metric_value(metrics, "qoqnode_study_transitions_total", 'state="complete"') == 1
    assert metric_value(metrics, "qoqnode_study_transitions_total", 'state="queued"') == 0


def test_results_go_within_seconds_of_a_destination_coming_back(make_node, tmp_path: Path, storescu) -> None:
    """The EHR is down when the study is read, and the retry backoff is a minute; the worker probes it
    every half second, so the ORU goes within seconds of the EHR's return (issue 17: 142 s after a
    2-minute PACS outage)."""
    port = free_port()
    cr = write_cr_study(tmp_path / "cr", size=256)
    node = make_node(destinations={"hl7": [{"name": "ehr", "host": LOOPBACK, "port": port, "timeout_seconds": 1}],
                                   "retry_base_seconds": 60, "retry_cap_seconds": 300, "probe_seconds": 0.5})
    assert storescu(node.scp.port, list(cr.files)).returncode == 0
    wait_for(lambda: any(item.attempts >= 1 for item in node.store.outbox.items()), timeout=60)
    [waiting] = node.store.outbox.items()
    assert waiting.state == "pending" and waiting.next_attempt_at - time.time() > 20  # the backoff alone: ~a minute
    with MllpListener(port=port) as ehr:
        wait_for(lambda: state(node, cr.study_uid) == COMPLETE, timeout=15)
        assert len(ehr.received) == 1
    [sent] = node.store.outbox.items()
    assert sent.state == SENT and sent.updated_at < waiting.next_attempt_at  # by the probe, well before the backoff
