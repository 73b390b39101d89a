"""Key Object Selection document: the images the model read, flagged "Of Interest" with the AI answer
as its description — what most PACS list as the study's key images, so the result is visible as
soon as the study opens."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from node.findings import Findings
from node.results.provenance import (
    MANUFACTURER,
    Provenance,
    clip,
    contributing_equipment,
    describe_equipment,
    device_observer,
    label_series,
    result_uid,
)

SERIES_NUMBER = 9905
#: The Key Object Description is a TEXT item: UT, but viewers show a line.
DESCRIPTION_LIMIT = 1024


def build_kos(findings: Findings, images: Sequence[Dataset], provenance: Provenance, study_version: int,
              task: str) -> Dataset:
    """The key object selection of ``images`` (the images read), titled Of Interest, describing the answer."""
    study_uid = str(images[0].StudyInstanceUID)
    answer = ", ".join(findings.labels) or "no answer"
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest,
        referenced_objects=list(images),
        observer_device_context=device_observer(provenance),
        description=clip(f"AI answer: {answer}. {provenance.banner}. Boxes: see the AI SR and SEG.",
                         DESCRIPTION_LIMIT),
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=list(images),
        content=content,
        series_instance_uid=result_uid(study_uid, study_version, task, provenance, "kos-series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=result_uid(study_uid, study_version, task, provenance, "kos"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        contributing_equipment=[contributing_equipment(provenance)],
    )
    _unname_references(kos)
    describe_equipment(kos, provenance)
    label_series(kos, images[0], provenance, "ko")
    return kos


def _unname_references(kos: Dataset) -> None:
    """Take the concept name off the KOS's IMAGE and COMPOSITE items: TID 2010 rows 8 and 9 forbid it
    (Purpose of Reference), and highdicom 0.28's ``KeyObjectSelection`` names each one (260753009, SCT,
    "Source"). highdicom reads the items back without a name."""
    for item in kos.ContentSequence:
        if item.ValueType in {"IMAGE", "COMPOSITE"} and "ConceptNameCodeSequence" in item:
            del item.ConceptNameCodeSequence
