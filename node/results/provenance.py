"""What every AI object says about itself: research use only, which model, which node; and its
deterministic UIDs."""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from node import __version__
from node.implementation import MANUFACTURER as NODE_MANUFACTURER
from node.results.carried import carry_deidentification, carry_laterality

#: ASCII on purpose: the label goes into every character set a source may use (ISO_IR 100 has no dash).
RESEARCH_LABEL = "AI RESULT - RESEARCH USE ONLY"
DISCLAIMER = "AI result - research use only, not for diagnosis."
MANUFACTURER = NODE_MANUFACTURER
#: IHE AIR (Rev 1.1, trial implementation): the AI model contributed to every result object as a processing
#: algorithm, a code IHE gives until DICOM assigns one. Not (109103, DCM): that is "Modifying Equipment" in
#: PS3.16 CID 7005, equipment that changed existing instances.
PROCESSING_ALGORITHM = hd.sr.CodedConcept("Newcode1", "99IHE", "Processing Algorithm")


@dataclass(frozen=True)
class Provenance:
    """The model and node behind a result."""

    model_identity: str
    is_test_result: bool
    node_version: str = __version__
    caveats: tuple[str, ...] = ()  # what else every object must say (an input outside the model's training)

    @property
    def banner(self) -> str:
        """The label every object carries, with a test marker when the model is not a real one and the
        study's caveats."""
        label = f"{RESEARCH_LABEL} (TEST MODEL)" if self.is_test_result else RESEARCH_LABEL
        return "; ".join((label, *self.caveats))


def result_uid(study_uid: str, study_version: int, task: str, provenance: Provenance, kind: str) -> str:
    """A UID that is the same whenever the same study version is read by the same model for the
    same task: a retry or re-run never makes a second copy in the PACS."""
    return generate_uid(
        entropy_srcs=[study_uid, str(study_version), task, provenance.model_identity, provenance.node_version, kind]
    )


def box_tracking(study_uid: str, study_version: int, task: str, provenance: Provenance,
                 number: int) -> tuple[str, str]:
    """The Tracking Identifier and Tracking UID of the ``number``-th box (1-based) of a read: the SR's
    measurement group and the SEG's segment of that box carry the same pair."""
    return f"AI box {number}", result_uid(study_uid, study_version, task, provenance, f"box-{number}")


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters (VR length limits), marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


#: What each result series is, first in its description: a PACS list shows the start.
SERIES_KINDS = {"sr": "AI SR", "seg": "AI boxes (SEG)", "pr": "AI boxes (PR)", "sc": "AI key images (SC)",
                "ko": "AI key images (KO)", "pdf": "AI report (PDF)"}


def label_series(result: Dataset, source: Dataset, provenance: Provenance, kind: str,
                 laterality: bool = False) -> None:
    """Mark a result object's series as what it is (``kind``: a key of SERIES_KINDS: "AI SR - ...") and as AI /
    research use, and encode it in UTF-8 (ISO_IR 192) so
    any model text is kept as written, whatever the source's character set; carry over the source's
    de-identification. With ``laterality`` (image IODs whose General Series dciodvfy checks for it: PR,
    SC), add the body part and Laterality (Type 2C) as :func:`carry_laterality` says."""
    result.SpecificCharacterSet = "ISO_IR 192"
    result.SeriesDescription = clip(f"{SERIES_KINDS[kind]} - {provenance.banner}", 64)
    carry_deidentification(result, source)
    if laterality:
        carry_laterality(result, source)


def software_versions(provenance: Provenance) -> str:
    """The Software Versions of every result object: the node's."""
    return f"qoq-node {provenance.node_version}"


def describe_equipment(document: Dataset, provenance: Provenance) -> None:
    """General Equipment of an SR document (the report, the key object selection), which highdicom leaves
    at the manufacturer: the model as model name, the node's version (IHE AIR)."""
    document.ManufacturerModelName = clip(provenance.model_identity, 64)
    document.SoftwareVersions = software_versions(provenance)


def device_uid(provenance: Provenance) -> str:
    """The Device UID of the node running this model: the same in every object it makes with it."""
    return result_uid("qoq-node", 0, "device", provenance, "device")


def device_observer(provenance: Provenance) -> hd.sr.ObserverContext:
    """The node running this model as the device observer of an SR document (the report, the key
    object selection)."""
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(provenance),
            name="qoq-node",
            manufacturer_name=MANUFACTURER,
            model_name=clip(provenance.model_identity, 64),
        ),
    )


def contributing_equipment(provenance: Provenance) -> hd.ContributingEquipment:
    """The node and the model as Contributing Equipment, in every result object (IHE AIR): purpose
    (Newcode1, 99IHE, "Processing Algorithm"), the model as model name, the node's version, and the node's
    Device UID."""
    equipment = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,  # highdicom knows only CID 7005: replaced below
        manufacturer_model_name=clip(provenance.model_identity, 64),
        software_versions=software_versions(provenance),
        contribution_description=clip(f"{provenance.banner}; model {provenance.model_identity}", 64),
    )
    equipment.PurposeOfReferenceCodeSequence = [PROCESSING_ALGORITHM]
    equipment.DeviceUID = device_uid(provenance)
    return equipment
