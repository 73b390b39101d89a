"""The queue stage: a study version's results → one outbox item per object and destination.

What the HL7 destinations' ORUs say of the sender and receiver (MSH-3..6) is also configured per
destination, so the parties come from here too.
"""

from __future__ import annotations

from node.config import DestinationsConfig
from node.results.hl7 import Hl7Party
from node.results.writer import ResultSet
from node.store import QueuedItem


def hl7_parties(destinations: DestinationsConfig) -> dict[str, Hl7Party]:
    """MSH-3..6 and the filler order number per HL7 destination."""
    return {
        d.name: Hl7Party(d.sending_application, d.sending_facility, d.receiving_application,
                         d.receiving_facility, d.filler_order_number)
        for d in destinations.hl7
    }


def queued_items(result: ResultSet, destinations: DestinationsConfig) -> list[QueuedItem]:
    """Every DICOM object for every PACS (by C-STORE or STOW-RS), and each HL7 destination's own message."""
    items = [QueuedItem(d.name, "dicom", obj.sop_instance_uid, str(obj.path))
             for d in destinations.dicom for obj in result.dicom]
    items += [QueuedItem(d.name, "dicomweb", obj.sop_instance_uid, str(obj.path))
              for d in destinations.dicomweb for obj in result.dicom]
    items += [QueuedItem(name, "hl7", control, str(path)) for name, (path, control) in result.messages.items()]
    return items
