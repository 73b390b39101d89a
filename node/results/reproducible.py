"""What highdicom takes from the clock and from chance, taken from the result's inputs instead.

highdicom stamps every object it builds with ``datetime.now()`` (instance creation; the content time it
is not given; a presentation state's creation; a secondary capture's time; its own Contributing
Equipment item) and gives a segmentation a random Dimension Organization UID. :func:`settle` sets them
from one moment of creation and the object's own deterministic UID, so the same read written again with
the same moment gives the same bytes.
"""

from __future__ import annotations

from datetime import datetime

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, DT, TM

#: highdicom's own Contributing Equipment item, stamped with the clock when it was made.
_HIGHDICOM = hd.ContributingEquipment.for_highdicom()

#: (date, time) keyword pairs highdicom fills in from the clock.
_CLOCK_STAMPS = (("InstanceCreationDate", "InstanceCreationTime"),
                 ("PresentationCreationDate", "PresentationCreationTime"),
                 ("DateOfSecondaryCapture", "TimeOfSecondaryCapture"))


def settle(dataset: Dataset, created: datetime) -> None:
    """Give ``dataset`` (a result object as highdicom built it) ``created`` wherever highdicom read the
    clock — the content date and time only where highdicom chose them (equal to the instance creation's:
    the SR's content time is the analysis, set by the node) — and a Dimension Organization UID derived
    from its SOP Instance UID."""
    if "ContentDate" in dataset and (dataset.ContentDate, dataset.get("ContentTime")) == (
            dataset.get("InstanceCreationDate"), dataset.get("InstanceCreationTime")):
        dataset.ContentDate, dataset.ContentTime = DA(created.date()), TM(created.time())
    for date, time in _CLOCK_STAMPS:
        if date in dataset:
            setattr(dataset, date, DA(created.date()))
            setattr(dataset, time, TM(created.time()))
    for item in dataset.get("ContributingEquipmentSequence", []):
        if (item.get("Manufacturer"), item.get("ManufacturerModelName")) == (_HIGHDICOM.Manufacturer,
                                                                             _HIGHDICOM.ManufacturerModelName):
            item.ContributionDateTime = DT(created)
    if "DimensionOrganizationSequence" in dataset:
        uid = generate_uid(entropy_srcs=[str(dataset.SOPInstanceUID), "dimension organization"])
        for item in [*dataset.DimensionOrganizationSequence, *dataset.get("DimensionIndexSequence", [])]:
            item.DimensionOrganizationUID = uid
