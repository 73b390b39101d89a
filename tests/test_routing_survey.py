"""``qoq-node routing survey`` (issue 23, item 4): a real Orthanc holding 32 studies in the period (and 2
outside it) with varied headers; the test states where each goes from the headers it wrote. Orthanc answers
at most 4 studies per C-FIND, so the survey must narrow its pages. A PACS that refuses, one that stops
answering and Ctrl-C each end the survey with what it has."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]  # made at import

from node.routing import DEFAULT_RULES
from node.testing.headers import write_header_study
from node.testing.loopback import LOOPBACK
from node.testing.pacs import Orthanc
from tests.helpers import qoq_node, start_in_foreground

UNTIL = date(2026, 3, 10)
#: The PE question's description pattern, the kidney question's (as the shipped rules write them).
PE = r"\bctpa\b|\bcta\b|angio|pulmonary embol|\bpe\b|embolism"
KIDNEY = r"(renal|kidney)\s+(mass|tumou?r|lesion|neoplasm|carcinoma|protocol)|\brcc\b|nephrectomy"
NON_CONTRAST_CHEST = ("no routing rule matches modality 'CT', body part 'CHEST'; nearest: task 'ct_chest' (rule 3): "
                      f"description does not match '{PE}'")
ABDOMEN = ("no routing rule matches modality 'CT', body part 'ABDOMEN'; nearest: task 'ct_kidney' (rule 8): "
           f"description does not match '{KIDNEY}'")
CHILD = ("no routing rule matches modality 'DX', body part 'CHEST'; nearest: task 'chest_xray' (rule 1): "
         "patient age outside 18 years or older")
MAMMO_VIEW = ("no routing rule matches modality 'MG', body part 'BREAST'; nearest: task 'mammography' (rule 16): "
              "view_position 'ML' is not one of CC, MLO")

CONTRAST = {"ContrastBolusAgent": "IOHEXOL"}
ADULT_PA = {"Modality": "DX", "BodyPartExamined": "CHEST", "ViewPosition": "PA"}
#: (study attributes, series attributes, where the study goes: a task or a skip reason, copies).
STUDIES: list[tuple[dict, list[dict], str, int]] = [
    ({"StudyDescription": "CTA CHEST PE PROTOCOL"}, [{"Modality": "CT", **CONTRAST}], "ct_chest", 3),
    ({"StudyDescription": "CTPA"}, [{"Modality": "CT", "BodyPartExamined": "CHEST", **CONTRAST}], "ct_chest", 1),
    # a hospital's code in the procedures table, on a CT that names nothing else
    ({"StudyDescription": "CT CHEST", "ProcedureCodeSequence": ["99HOSP:CTPA01"]}, [{"Modality": "CT"}],
     "ct_chest", 1),
    ({"StudyDescription": "CT HEAD WO CONTRAST"}, [{"Modality": "CT", "BodyPartExamined": "HEAD"}], "ct_head", 3),
    ({"StudyDescription": "CT BRAIN"}, [{"Modality": "CT"}], "ct_head", 1),
    ({"StudyDescription": "CT ABDOMEN RENAL MASS PROTOCOL"},
     [{"Modality": "CT", "BodyPartExamined": "ABDOMEN", **CONTRAST}], "ct_kidney", 2),
    ({"StudyDescription": "XR CHEST PA", "PatientAge": "045Y"}, [ADULT_PA], "chest_xray", 3),
    # a lateral view first, then the PA view: the study is routed by the PA series
    ({"StudyDescription": "XR CHEST 2 VIEWS", "PatientAge": "070Y"},
     [{**ADULT_PA, "ViewPosition": "LL"}, ADULT_PA], "chest_xray", 1),
    ({"StudyDescription": "MR BRAIN"}, [{"Modality": "MR", "BodyPartExamined": "BRAIN"}], "mri", 3),
    ({"StudyDescription": "US BREAST"}, [{"Modality": "US", "BodyPartExamined": "BREAST"}], "ultrasound", 2),
    ({"StudyDescription": "MAMMO SCREENING"}, [{"Modality": "MG", "BodyPartExamined": "BREAST", "ViewPosition": "CC"}],
     "mammography", 2),
    # a report series first: reports do not route a study
    ({"StudyDescription": "MAMMO DIAGNOSTIC"},
     [{"Modality": "SR"}, {"Modality": "MG", "BodyPartExamined": "BREAST", "ViewPosition": "MLO"}], "mammography", 1),
    ({"StudyDescription": "CT CHEST WO CONTRAST"}, [{"Modality": "CT", "BodyPartExamined": "CHEST"}],
     NON_CONTRAST_CHEST, 3),
    ({"StudyDescription": "CT ABDOMEN PELVIS W CONTRAST"},
     [{"Modality": "CT", "BodyPartExamined": "ABDOMEN", **CONTRAST}], ABDOMEN, 3),
    ({"StudyDescription": "XR CHEST PA", "PatientAge": "008Y"}, [ADULT_PA], CHILD, 2),
    ({"StudyDescription": "MAMMO SPECIAL VIEW"},
     [{"Modality": "MG", "BodyPartExamined": "BREAST", "ViewPosition": "ML"}], MAMMO_VIEW, 1),
]
#: The busy day: a third of the studies, more than Orthanc answers one C-FIND with.
BUSY = UNTIL - timedelta(days=5)


def _expected() -> tuple[Counter[str], Counter[str]]:
    tasks: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for _, _, where, copies in STUDIES:
        (skipped if where.startswith("no routing rule") else tasks)[where] += copies
    return tasks, skipped


def _write_studies(directory: Path) -> None:
    """The studies of :data:`STUDIES`, over the 8 days to :data:`UNTIL` (a third on the busy day), at distinct
    times; and two outside the period."""
    index = 0
    for study, series, _, copies in STUDIES:
        for _ in range(copies):
            day = BUSY if index % 3 == 0 else UNTIL - timedelta(days=index % 8)
            when = {"StudyDate": f"{day:%Y%m%d}", "StudyTime": f"{7 + index % 12:02d}{index * 7 % 60:02d}{index:02d}"}
            write_header_study(directory, {**study, **when}, series)
            index += 1
    for day in (UNTIL - timedelta(days=8), UNTIL + timedelta(days=1)):
        write_header_study(directory, {"StudyDate": f"{day:%Y%m%d}", "StudyTime": "120000",
                                       "StudyDescription": "CT HEAD"}, [{"Modality": "CT", "BodyPartExamined": "HEAD"}])


@pytest.fixture(scope="module")
def pacs(orthanc_installed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """An Orthanc of its own (no other test's studies) answering at most 4 matches per C-FIND, holding the
    studies, and knowing the node's AE (Orthanc answers the queries of AEs it knows only)."""
    root = tmp_path_factory.mktemp("survey")
    _write_studies(root / "files")
    with Orthanc(root / "orthanc", settings={"LimitFindResults": 4}) as server:
        for path in sorted((root / "files").iterdir()):
            server.upload(path)
        server.add_modality("qoqnode", "QOQNODE", 104)
        yield server


def _config(tmp_path: Path, port: int, timeout: float = 30) -> Path:
    """node.yaml naming the PACS, with the shipped rules and a hospital's code in their procedures table."""
    rules = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump({**rules, "procedures": {"99HOSP:CTPA01": "ct_chest"}}))
    config = {"destinations": {"dicom": [{"name": "pacs", "ae_title": "ORTHANC", "host": LOOPBACK, "port": port,
                                          "timeout_seconds": timeout}]},
              "routing": {"rules": str(tmp_path / "routing.yaml")}, "storage": {"root": str(tmp_path / "root")}}
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _survey(config: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return qoq_node("routing", "survey", "--config", str(config), "--since", "7d", "--until", str(UNTIL), *options,
                    env=env, check=False, timeout=120)


def test_the_counts_per_task_and_reason_are_those_the_headers_say(pacs: Orthanc, tmp_path: Path) -> None:
    run = _survey(_config(tmp_path, pacs.dicom_port), "--json")
    assert run.returncode == 0, run.stderr
    survey = json.loads(run.stdout)
    tasks, skipped = _expected()
    # the busy day holds 11 studies, Orthanc answers 4 at most: all 32 come only if the pages were narrowed
    assert survey["complete"] and survey["stopped"] is None
    assert (survey["since"], survey["until"]) == ("2026-03-03", "2026-03-10")
    assert survey["studies"] == sum(tasks.values()) + sum(skipped.values()) == 32
    assert {name: group["studies"] for name, group in survey["tasks"].items()} == tasks
    assert {reason: group["studies"] for reason, group in survey["skipped"].items()} == skipped
    assert survey["tasks"]["ct_chest"]["descriptions"] == [["CTA CHEST PE PROTOCOL", 3], ["CT CHEST", 1],
                                                            ["CTPA", 1]]
    assert survey["tasks"]["chest_xray"]["descriptions"] == [["XR CHEST PA", 3], ["XR CHEST 2 VIEWS", 1]]
    assert "8/8 days, 32 studies, done" in run.stderr  # the progress bar

    bounded = json.loads(_survey(_config(tmp_path, pacs.dicom_port), "--json", "--max-studies", "5").stdout)
    assert bounded["studies"] == 5 and not bounded["complete"] and "--max-studies 5" in bounded["stopped"]

    text = _survey(_config(tmp_path, pacs.dicom_port), "--top", "1")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[:2] == ["routing survey of pacs (AE ORTHANC), studies dated 2026-03-03 to 2026-03-10",
                         "32 studies: 23 would be read, 9 skipped"]
    chest = lines.index("       5  ct_chest")
    assert lines[chest + 1: chest + 3] == ["              3 × CTA CHEST PE PROTOCOL", "       4  chest_xray"]
    assert lines[lines.index(f"       3  {ABDOMEN}") + 1] == "              3 × CT ABDOMEN PELVIS W CONTRAST"


def test_a_pacs_that_refuses_c_find_gets_a_clear_error(pacs: Orthanc, tmp_path: Path) -> None:
    run = _survey(_config(tmp_path, pacs.dicom_port), env={"QOQ_NODE__DICOM__AE_TITLE": "STRANGER"})
    assert run.returncode == 1
    assert "0 studies" in run.stdout.splitlines()[1]
    assert "qoq-node: routing survey stopped: the PACS pacs failed the survey while asking for studies dated " \
           "2026-03-03 (day 1 of 8), after 0 studies: C-FIND unanswered: the PACS ended the association" in run.stderr


class _StallingPacs:
    """A PACS (pynetdicom) that answers the first day's 2 studies, then stalls ``stall`` seconds on the next day
    (``series``: on the first day's series instead)."""

    def __init__(self, stall: float, series: bool = False) -> None:
        self.stall, self.series, self.released, self.stalling = stall, series, threading.Event(), threading.Event()
        ae = AE(ae_title="ORTHANC")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.server = ae.start_server((LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_FIND, self._find)])
        self.port = self.server.server_address[1]

    def _find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        if query.QueryRetrieveLevel == "SERIES" and not self.series:
            answer = Dataset()
            answer.StudyInstanceUID, answer.Modality, answer.BodyPartExamined = query.StudyInstanceUID, "CT", "HEAD"
            yield 0xFF00, answer
        elif query.QueryRetrieveLevel == "STUDY" and query.StudyDate == f"{UNTIL - timedelta(days=1):%Y%m%d}":
            for uid in ("1.2.826.0.1.3680043.10.1", "1.2.826.0.1.3680043.10.2"):
                answer = Dataset()
                answer.StudyInstanceUID, answer.StudyDescription = uid, "CT HEAD"
                yield 0xFF00, answer
        else:
            self.stalling.set()
            self.released.wait(self.stall)
        yield 0x0000, None

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()


def test_a_pacs_that_stops_answering_keeps_what_the_survey_has(tmp_path: Path) -> None:
    stalling = _StallingPacs(stall=10)
    try:
        run = qoq_node("routing", "survey", "--config", str(_config(tmp_path, stalling.port, timeout=1)), "--since",
                       "1d", "--until", str(UNTIL), "--json", check=False, timeout=60)
    finally:
        stalling.close()
    assert run.returncode == 1
    survey = json.loads(run.stdout)
    assert not survey["complete"] and survey["studies"] == 2 and survey["tasks"] == {"ct_head": {
        "studies": 2, "descriptions": [["CT HEAD", 2]]}}
    assert ("the PACS pacs failed the survey while asking for studies dated 2026-03-10 (day 2 of 2), after 2 "
            "studies: C-FIND timed out: no answer within 1 s; the counts are of the studies surveyed before"
            ) in run.stderr


@pytest.mark.parametrize(("series", "where"), [
    (False, "studies dated 2026-03-10 (day 2 of 2), after 2 studies"),
    # the series are asked on the pool's threads: each aborted association ends the query waiting on it
    (True, "studies dated 2026-03-09 (day 1 of 2), after 0 studies")])
def test_ctrl_c_cancels_and_prints_what_the_survey_has(series: bool, where: str, tmp_path: Path) -> None:
    stalling = _StallingPacs(stall=60, series=series)
    try:
        process = start_in_foreground(
            [sys.executable, "-m", "node", "routing", "survey", "--config", str(_config(tmp_path, stalling.port)),
             "--since", "1d", "--until", str(UNTIL), "--json"])
        assert stalling.stalling.wait(30), "the survey never reached the stalled C-FIND"
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert time.monotonic() - started < 10  # no waiting on the stalled PACS (its timeout is 30 s)
    finally:
        stalling.close()
    assert process.returncode == 130, err
    survey = json.loads(out)
    assert not survey["complete"] and survey["studies"] == (0 if series else 2)
    assert survey["stopped"] == f"cancelled while asking for {where}"


def test_ctrl_c_reaches_the_command_even_where_the_tests_run_with_it_ignored() -> None:
    # (a background job of a non-interactive shell, as CI may start the suite, ignores SIGINT, and a child
    # inherits that: the survey would never hear the test's Ctrl-C)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = start_in_foreground([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) "
                                                            "is signal.default_int_handler)"])
        out, _ = process.communicate(timeout=30)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert out.strip() == "True"
