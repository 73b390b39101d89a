"""Coded concepts for answer and box labels: SNOMED CT where a code is certain, else the node's
private coding scheme (declared in every SR's Coding Scheme Identification Sequence)."""

from __future__ import annotations

import re

from highdicom.sr import CodedConcept

PRIVATE_SCHEME = "99QOQ"
PRIVATE_SCHEME_NAME = "qoq-node AI finding labels"

#: Label (lower case) → SNOMED CT concept. Only codes checked against SNOMED CT are listed.
SNOMED = {
    "pneumonia": ("233604007", "Pneumonia"),
    "pleural effusion": ("60046008", "Pleural effusion"),
    "pneumothorax": ("36118008", "Pneumothorax"),
    "cardiomegaly": ("8186001", "Cardiomegaly"),
    "atelectasis": ("46621007", "Atelectasis"),
    "edema": ("19242006", "Pulmonary edema"),
    "consolidation": ("95436008", "Lung consolidation"),
    "mass": ("4147007", "Mass"),
    "nodule": ("27925004", "Nodule"),
    "myocardial infarction": ("22298006", "Myocardial infarction"),
    "basal cell carcinoma": ("254701007", "Basal cell carcinoma of skin"),
    # as DICOM PS3.16 codes them (pydicom.sr.codedict.codes.SCT)
    "melanoma": ("1162635006", "Malignant melanoma"),
    "actinic keratosis": ("201101007", "Actinic keratosis"),
}


def label_concept(label: str) -> CodedConcept:
    """The coded concept for a model label."""
    known = SNOMED.get(label.strip().lower())
    if known is not None:
        return CodedConcept(known[0], "SCT", known[1])
    value = re.sub(r"[^A-Z0-9]+", "-", label.upper()).strip("-")[:16] or "UNNAMED"
    return CodedConcept(value, PRIVATE_SCHEME, label[:64] or "unnamed")
