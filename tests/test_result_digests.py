"""Results are reproducible byte for byte: a fixed study, a fixed answer, a fixed moment and a fixed node
and model give exactly these SR, SEG, GSPS, KOS, SC, PDF report and ORU, with these UIDs.

The constants are what the code before issue 22's refactor wrote, and what the code after it writes.
Compared on 2026-12-07 with two throw-away scripts: ``before.py`` ran this test's inputs through
e41b40f's API (``node.infer.prepare`` → ``StudyOutcome`` with the findings, model and ``analysed_at`` →
the pipeline-era ``write_results``; ``node.synthetic``, ``node.engine.profiles``), with highdicom's and
the ORU's clock held at ``CREATED``; ``after.py`` printed :func:`digests` of :func:`write_fixed_results`:

    git worktree add /work/wt-before e41b40f --detach
    cd /work/wt-before && PYTHONPATH=$PWD python before.py | grep -v study.prepared > /tmp/before.txt
    cd /work/wt-digests && PYTHONPATH=$PWD python after.py | grep -v study.prepared > /tmp/after.txt
    diff /tmp/before.txt /tmp/after.txt && echo identical
    identical

(both files: the five objects' name, SOP Instance UID, Series Instance UID and SHA-256 and the ORU's
MSH-10 and SHA-256, as in ``DICOM`` and ``MESSAGES``). One value differs by design: e41b40f gave each SEG
a random Dimension Organization UID (highdicom's ``UID()``); the node now derives it from the SEG's SOP
Instance UID (``node.results.reproducible``), and ``before.py`` set the old SEG's to that value before
hashing it (a pydicom read and write, which gives the new SEG's bytes back unchanged).

The bytes of the five objects have changed since, on purpose, each change made and reviewed on its own
(2026-12-07; their UIDs and the ORU are as they were): the synthetic CT's Study Description is now
"SYNTHETIC CTA CHEST" (an input: the pulmonary-embolism task now reads CT angiograms only, issue 23); the
result objects' fixes of issue 26 (items 10, 18-25: the AI's Contributing Equipment purpose is IHE AIR's
(Newcode1, 99IHE, "Processing Algorithm"), the SR and KOS name the model and the node's version, the GSPS
and SC carry Body Part Examined and no empty Laterality, KOS items have no concept name, the SR references
the SEG in a TID 1410 group of its own, the SEG has a Slice Thickness); and the SC's box outline drawn at
the nearest pixel edge (a mapped-back edge such as 2129.9999999 was cut to the pixel before it). The AI report
(``report.dcm``, an Encapsulated PDF, issue 24) was added 2026-12-07: its digest covers the PDF's bytes too
(fpdf2 and the DejaVu Sans it embeds; the PDF's creation date and file identifier come from ``CREATED``). A digest that
changes is a change in what the node sends to the PACS and the EHR (or a pydicom/highdicom upgrade that
encodes differently): find out which field changed, and why, before updating it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from node.chain import prepare_study
from node.config import load_config
from node.imaging.prepared import Prepared
from node.model.profiles import PROFILES
from node.reading import read_from_text
from node.results.hl7 import Hl7Party
from node.results.writer import ResultSet, write_results
from node.routing import DEFAULT_RULES, Router
from node.testing.synthetic import write_ct_study, write_file

#: The model's answer: reasoning, one box in the model input's pixels (the 256×256 slice is given as is)
#: and the diagnosis.
ANSWER = ('<think>A dense round focus in the right upper lobe.</think>\n```json\n'
          '[{"bbox_2d": [100, 60, 130, 90], "label": "nodule"}]\n```\n\\boxed{Nodule}')
MODEL = "replay (recorded responses; TEST RESULT, not a model output)"
NODE_VERSION = "0.1.0"
ANALYSED_AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
CREATED = datetime(2026, 1, 2, 3, 4, 9, 123456)  # local time, as highdicom reads the clock

#: file → (SOP Instance UID, Series Instance UID, SHA-256 of the file).
DICOM = {
    "gsps.dcm": ("1.2.826.0.1.3680043.8.498.40156731926293966854036720705109897861",
                 "1.2.826.0.1.3680043.8.498.34993357912090033634025882216497034187",
                 "fcb08e5e6fd3bac5eb251228cb712a2c58658daaaf92e4773312ba75779b3bff"),
    "kos.dcm": ("1.2.826.0.1.3680043.8.498.52075655160495396770495361478786847639",
                "1.2.826.0.1.3680043.8.498.11747868230504618655904782191429073988",
                "e3e1df3bea59643fb959da6b70c1358489c1b582efac226b4617e2cfe2f5fab2"),
    "report.dcm": ("1.2.826.0.1.3680043.8.498.44976088077223631520911179059496455889",
                   "1.2.826.0.1.3680043.8.498.12930292458198173404619348333703201545",
                   "dc410044bb46388a2ae8daff80b45dbba8edf4a3c46838ef7d188b20baa53151"),
    "sc-1.dcm": ("1.2.826.0.1.3680043.8.498.13172976978442668772433456113600569178",
                 "1.2.826.0.1.3680043.8.498.38543118964629898677921517032477455825",
                 "67fbf6f31afab464a00ed1f5d1162b7bf169c90dbbb369d8173c4433f9d2073f"),
    "seg-1.dcm": ("1.2.826.0.1.3680043.8.498.27280708365675957010871513770808322464",
                  "1.2.826.0.1.3680043.8.498.37548864550590114333050257966438578241",
                  "121a5c3699244edb6697f5fbf5264c6eb74192e22079d78db19ac3af4d359d58"),
    "sr.dcm": ("1.2.826.0.1.3680043.8.498.13447252492728811220262906237045603887",
               "1.2.826.0.1.3680043.8.498.74897415183967272007569997891190612115",
               "3b69ec2cf02c8218406b9555793983d83247cf5e646e10da58f482aacdba9943"),
}
#: HL7 destination → (MSH-10, SHA-256 of the message).
MESSAGES = {
    "ehr": ("QOQ8DD11E63496A63B8A", "fabf68d7715bf97a78b11384b83668458bfd57c020d44b7848c864465b45fcdd"),
}


def fixed_uid(*parts: str) -> str:
    """A UID that is the same in every run (and in the comparison with the old code)."""
    return generate_uid(entropy_srcs=["qoq-node result digests", *parts])


def fixed_study(directory: Path) -> tuple[str, list[Path]]:
    """A two-slice synthetic CT study (256×256) with fixed UIDs: its Study Instance UID and files."""
    study = write_ct_study(directory, slices=2, size=256)
    for path in study.files:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = fixed_uid("study")
        ds.SeriesInstanceUID = fixed_uid("series", str(ds.SeriesNumber))
        ds.FrameOfReferenceUID = fixed_uid("frame of reference")
        ds.SOPInstanceUID = fixed_uid("instance", path.name)
        write_file(ds, path)
    return fixed_uid("study"), list(study.files)


def write_fixed_results(root: Path) -> ResultSet:
    """The results stage over the fixed study and answer, at the fixed moment, by the fixed node."""
    study_uid, files = fixed_study(root / "study")
    prepared = prepare_study(study_uid, files, Router.from_file(DEFAULT_RULES),
                             load_config(None, environ={}).imaging, PROFILES["qwen2.5-vl"])
    assert isinstance(prepared, Prepared), prepared
    read = read_from_text(prepared, ANSWER, MODEL, True, ANALYSED_AT)
    return write_results(read, root / "out", {"ehr": Hl7Party()}, secondary_capture=True, created=CREATED,
                         node_version=NODE_VERSION)


def digests(written: ResultSet) -> tuple[dict[str, tuple[str, str, str]], dict[str, tuple[str, str]]]:
    """What the test compares: each object's UIDs and bytes' SHA-256, each message's MSH-10 and SHA-256."""
    dicom = {item.path.name: (item.sop_instance_uid, str(pydicom.dcmread(item.path).SeriesInstanceUID),
                              hashlib.sha256(item.path.read_bytes()).hexdigest()) for item in written.dicom}
    messages = {name: (msh10, hashlib.sha256(path.read_bytes()).hexdigest())
                for name, (path, msh10) in written.messages.items()}
    return dicom, messages


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process in UTC: the ORU's MSH-7 is written in the machine's local time."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("utc")
def test_a_fixed_study_gives_the_same_bytes_and_uids(tmp_path: Path) -> None:
    written = write_fixed_results(tmp_path)
    assert written.omitted == ()
    assert digests(written) == (DICOM, MESSAGES)

