"""A small fixed local-validation set for ``qoq-node evaluate``: 4 adult PA chest CRs and 4 CT pulmonary
angiograms (both routed), a fifth CTPA whose pixel data is cut short (it fails), and one non-contrast chest
CT (routed nowhere), with a reference CSV and the replay answers that read them.
The expected figures are worked out by hand in tests/test_evaluate.py."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from node.testing.node_process import replay_settings
from node.testing.synthetic import restamp, write_cr_study, write_ct_study, write_file
from tests.helpers import qoq_node
from tests.reference import answer

#: What the replay engine answers every chest radiograph (with one box, in source pixels: a 512² CR is not
#: pre-resized) and every CT.
CHEST_BOX = (100, 100, 200, 200)
RESPONSES = {"chest_xray": answer("Cardiomegaly, Pleural Effusion", CHEST_BOX), "ct": answer("Acute PE")}
#: The reference labels of the four CRs, the four CTPAs and the non-contrast CT, as the CSV gives them.
CR_LABELS = ("Cardiomegaly;Pleural Effusion", "Cardiomegaly", "No Finding", "Pleural Effusion;Edema")
CT_LABELS = ("Acute PE", "acute pe", "No PE", "Chronic PE")


@dataclass(frozen=True)
class EvaluationSet:
    """The studies' folder, the CSV, the engine settings and each study's name in the CSV."""

    folder: Path
    labels: Path
    env: dict[str, str]
    names: tuple[str, ...]  # the CRs, the CTPAs, the broken CTPA, the non-contrast CT
    cr_sops: tuple[str, ...]


def write_evaluation_set(root: Path) -> EvaluationSet:
    """Write the studies (one folder each), the CSV and the replay answers under ``root``."""
    import pydicom

    folder, rows, names, sops = root / "studies", [], [], []
    for index, labels in enumerate(CR_LABELS, start=1):
        study = restamp(write_cr_study(folder / f"cr{index}", size=512), AccessionNumber=f"ACC-CR-{index}")
        sop = str(pydicom.dcmread(study.files[0], stop_before_pixels=True).SOPInstanceUID)
        name = f"ACC-CR-{index}" if index == 2 else study.study_uid  # one row names its study by accession
        boxes = {1: f"{sop}:100,100,200,200", 2: f"{sop}:150,150,250,250"}.get(index, "")
        rows.append((name, labels, boxes))
        names.append(name)
        sops.append(sop)
    for index, labels in enumerate(CT_LABELS, start=1):
        study = restamp(write_ct_study(folder / f"ct{index}", slices=1, size=256),
                        StudyDescription="CTA CHEST PE PROTOCOL", AccessionNumber=f"ACC-CT-{index}")
        rows.append((study.study_uid, labels, ""))
        names.append(study.study_uid)
    broken = restamp(write_ct_study(folder / "ct-broken", slices=1, size=256),
                     StudyDescription="CTA CHEST PE PROTOCOL", AccessionNumber="ACC-CT-BROKEN")
    ds = pydicom.dcmread(broken.files[0])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    write_file(ds, broken.files[0])
    rows.append((broken.study_uid, "Acute PE", ""))
    names.append(broken.study_uid)
    plain = restamp(write_ct_study(folder / "ct-plain", slices=1, size=256),
                    StudyDescription="CT CHEST WITHOUT CONTRAST", AccessionNumber="ACC-CT-PLAIN")
    rows.append((plain.study_uid, "No PE", ""))
    names.append(plain.study_uid)
    labels_path = root / "labels.csv"
    write_csv(labels_path, rows)
    env = {**replay_settings(root / "responses.json", RESPONSES), "QOQ_NODE__LOG__LEVEL": "WARNING"}
    return EvaluationSet(folder, labels_path, env, tuple(names), tuple(sops))


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """A reference CSV with the columns study, labels, boxes."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study", "labels", "boxes"])
        writer.writerows(rows)


def run_evaluate(dataset: EvaluationSet, out: Path, check: bool = True):
    """``qoq-node evaluate`` on the set, its report under ``out``."""
    return qoq_node("evaluate", str(dataset.folder), "--labels", str(dataset.labels), "--out", str(out),
                    env=dataset.env, check=check)
