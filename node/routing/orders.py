"""A study's HL7 order, found by its patient and its accession, placer or filler number (for routing on
the order's procedure, OBR-4, when the header carries none; the context stage gives its reason and
clinical information)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from node.store.clinical import ClinicalStore, Order, patient_key

#: The order numbers a Request Attributes item may carry.
ORDER_NUMBER_KEYWORDS = ("AccessionNumber", "PlacerOrderNumberImagingServiceRequest",
                         "FillerOrderNumberImagingServiceRequest")


def order_numbers(ds: Dataset) -> tuple[str, ...]:
    """The accession number, then each Request Attributes item's accession, placer and filler numbers."""
    numbers = [str(ds.get("AccessionNumber", "") or "")]
    for request in ds.get("RequestAttributesSequence", None) or []:
        numbers += [str(request.get(keyword, "") or "") for keyword in ORDER_NUMBER_KEYWORDS]
    return tuple(dict.fromkeys(n.strip() for n in numbers if n.strip()))


def dataset_patient_key(ds: Dataset, default_authority: str) -> str:
    """The patient key of a dataset: Patient ID with Issuer of Patient ID (else ``default_authority``)."""
    return patient_key(str(ds.get("PatientID", "") or ""),
                       str(ds.get("IssuerOfPatientID", "") or "") or default_authority)


class OrderFinder:
    """Finds the order a study was made for among the HL7 orders the node holds."""

    def __init__(self, clinical: ClinicalStore, default_authority: str) -> None:
        self._clinical, self._authority = clinical, default_authority

    def order_of(self, ds: Dataset) -> Order | None:
        """The latest order of the dataset's patient with one of its order numbers; None without one."""
        return self._clinical.order_for(dataset_patient_key(ds, self._authority), order_numbers(ds))
