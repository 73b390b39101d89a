"""What a result object carries over from its source besides patient and study: that the source was
de-identified and how, and the body part and laterality its series shows — valid, or not at all.

highdicom copies Patient Identity Removed from the source, but not the method it requires (Type 1C);
an empty Laterality says "unknown", which is wrong for a body part that has no sides (PS3.3 C.7.3.1:
Laterality is required only for paired body parts).
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

#: Said when a source is marked de-identified but does not say how (the method is Type 1C).
UNSTATED_METHOD = "Method not stated by the source"
#: Body Part Examined terms (PS3.16 Annex L) of unpaired structures, as dciodvfy reads them: their series have
#: no Laterality; every other body part's series needs one (empty when the side is unknown).
UNPAIRED_BODY_PARTS = frozenset({
    "ABDOMEN", "ABDOMENPELVIS", "AORTA", "BLADDER", "BRAIN", "CEREBELLUM", "CERVIX", "CHEST", "CHESTABDOMEN",
    "CHESTABDPELVIS", "CIRCLEOFWILLIS", "COCCYX", "COLON", "CORONARYARTERY", "CSPINE", "CTSPINE", "DUODENUM",
    "ESOPHAGUS", "FACE", "GALLBLADDER", "HEAD", "HEADNECK", "HEART", "ILEUM", "JAW", "JEJUNUM", "LARYNX", "LIVER",
    "LSPINE", "LSSPINE", "MAXILLA", "MEDIASTINUM", "MOUTH", "NECK", "NECKCHEST", "NECKCHESTABDOMEN",
    "NECKCHESTABDPELV", "NOSE", "PANCREAS", "PELVIS", "PENIS", "PHARYNX", "PROSTATE", "RECTUM", "SCALP", "SKULL",
    "SPINE", "SPLEEN", "SSPINE", "STERNUM", "STOMACH", "THYMUS", "THYROID", "TLSPINE", "TONGUE", "TRACHEA",
    "TSPINE", "URETER", "URETHRA", "UTERUS", "VAGINA", "VULVA", "WHOLEBODY",
})
_SIDES = frozenset({"L", "R"})


def carry_deidentification(result: Dataset, source: Dataset) -> None:
    """A source marked de-identified (Patient Identity Removed YES) makes ``result`` say so too, with the
    source's De-identification Method and its Code Sequence (the method stated as unknown when the source
    gives neither)."""
    if str(source.get("PatientIdentityRemoved", "")).strip().upper() != "YES":
        return
    result.PatientIdentityRemoved = "YES"
    for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if source.get(keyword):
            result[keyword] = source[keyword]
    if not result.get("DeidentificationMethod") and not result.get("DeidentificationMethodCodeSequence"):
        result.DeidentificationMethod = UNSTATED_METHOD


def carry_laterality(result: Dataset, source: Dataset) -> None:
    """Body Part Examined and Laterality of an image result's series (PR, SC): the source's body part; its
    side (Laterality, else Image Laterality) when it names one; none for an unpaired body part; else empty
    (unknown: a paired body part of unknown side, or no body part named)."""
    body_part = re.sub(r"[^A-Z0-9 _]", "", str(source.get("BodyPartExamined", "") or "").upper()).strip()
    if body_part and "BodyPartExamined" not in result:
        result.BodyPartExamined = body_part[:16]
    side = next((str(source.get(keyword, "") or "").strip().upper() for keyword in ("Laterality", "ImageLaterality")
                 if str(source.get(keyword, "") or "").strip().upper() in _SIDES), "")
    if "Laterality" in result:
        del result.Laterality
    if side or body_part not in UNPAIRED_BODY_PARTS:
        result.Laterality = side
