"""What an inbound HL7 message means for the clinical context: orders (ORM^O01, OMI^O23), laboratory
results (ORU^R01), radiology reports (ORU^R01 of report text, MDM^T02: :mod:`node.ingest.hl7_report`),
patient updates and merges (ADT^A08, ADT^A40).

The patient is PID-3 with its assigning authority (CX.4); the identifier whose type (CX.5) is MR is
taken when there are several. An identifier without an authority takes ``default_authority`` (the
one DICOM Patient IDs without an Issuer of Patient ID are matched with).
"""

from __future__ import annotations

from node.ingest.hl7_report import is_report, report_of
from node.ingest.hl7v2 import Hl7Error, Hl7Message, timestamp
from node.store.clinical import InboundMessage, LabResult, Merge, Order, patient_key

#: Message types the listener takes (MSH-9.1^MSH-9.2).
SUPPORTED_TYPES = ("ORM^O01", "OMI^O23", "ORU^R01", "MDM^T02", "ADT^A08", "ADT^A40")
#: OBX-11 statuses whose value is not a result (deleted, wrong, not obtainable).
_NOT_A_RESULT = frozenset({"D", "W", "X"})


class UnsupportedMessage(Hl7Error):
    """A message of a type the node does not take (answered AR)."""


def message_type(message: Hl7Message) -> str:
    """MSH-9 as ``TYPE^EVENT`` (e.g. ``ORM^O01``)."""
    return f"{message.field('MSH', 9, 1)}^{message.field('MSH', 9, 2)}".upper()


def _identifier_key(message: Hl7Message, segment: tuple[str, ...] | None, number: int,
                    default_authority: str) -> str:
    """The patient key of a CX list (PID-3, MRG-1): the MR identifier, else the first."""
    repeats = message.repetitions(segment, number)
    chosen = next((i for i in range(len(repeats)) if message.value(segment, number, 5, i).upper() == "MR"), 0)
    identifier = message.value(segment, number, 1, chosen)
    authority = message.value(segment, number, 4, chosen) or default_authority
    return patient_key(identifier, authority)


def _coded_text(message: Hl7Message, segment: tuple[str, ...] | None, number: int) -> str:
    """A CE/CWE field (all repetitions) as text: each one's text component, else its code."""
    texts = []
    for index in range(len(message.repetitions(segment, number))):
        text = message.value(segment, number, 2, index) or message.value(segment, number, 1, index)
        if text:
            texts.append(text)
    return "; ".join(texts)


def _codes(message: Hl7Message, segment: tuple[str, ...] | None, number: int) -> tuple[str, ...]:
    """A CE/CWE field's codes (all repetitions, identifier and alternate identifier) as SCHEME:VALUE."""
    codes = []
    for index in range(len(message.repetitions(segment, number))):
        for code, scheme in ((1, 3), (4, 6)):
            value = message.value(segment, number, code, index)
            if value:
                codes.append(f"{message.value(segment, number, scheme, index)}:{value}")
    return tuple(codes)


def _orders(message: Hl7Message, key: str) -> tuple[Order, ...]:
    """One order per OBR, with the ORC before it and (OMI) the IPC after it."""
    groups: list[list[tuple[str, ...] | None]] = []  # [OBR, the ORC before it, the IPC after it]
    orc = None
    for segment in message.segments:
        if segment[0] == "ORC":
            orc = segment
        elif segment[0] == "OBR":
            groups.append([segment, orc, None])
        elif segment[0] == "IPC" and groups and groups[-1][2] is None:
            groups[-1][2] = segment
    orders = []
    for obr, order_control, ipc in groups:
        placer = message.value(obr, 2) or message.value(order_control, 2)
        filler = message.value(obr, 3) or message.value(order_control, 3)
        accession = message.value(ipc, 1) or message.value(obr, 18) or filler
        priority = (message.value(message.first("TQ1"), 9) or message.value(order_control, 7, 6)
                    or message.value(obr, 27, 6) or message.value(obr, 5))
        ordered = timestamp(message.value(order_control, 9)) or timestamp(message.value(obr, 6))
        orders.append(Order(key, placer, filler, accession, _coded_text(message, obr, 4),
                            _coded_text(message, obr, 31), message.value(obr, 13), priority, ordered,
                            procedure_codes=_codes(message, obr, 4)))
    if not orders:
        raise Hl7Error("the order message has no OBR segment")
    return tuple(orders)


def _results(message: Hl7Message, key: str, received_at: float) -> tuple[LabResult, ...]:
    """One result per OBX with a value; its time is OBX-14, else its OBR-7, else MSH-7, else receipt."""
    results, obr = [], None
    sent = timestamp(message.field("MSH", 7)) or received_at
    for segment in message.segments:
        if segment[0] == "OBR":
            obr = segment
        elif segment[0] == "OBX" and message.value(segment, 11).upper() not in _NOT_A_RESULT:
            value_type = message.value(segment, 2).upper()
            value = (message.value(segment, 5, 2) or message.value(segment, 5, 1)) if value_type in {"CE", "CWE"} \
                else message.value(segment, 5)
            code = message.value(segment, 3, 1)
            if not value or not code:
                continue
            observed = timestamp(message.value(segment, 14)) or timestamp(message.value(obr, 7)) or sent
            results.append(LabResult(
                key, code, message.value(segment, 3, 3), message.value(segment, 3, 2) or code, value,
                message.value(segment, 6, 1) or message.value(segment, 6, 2), message.value(segment, 7),
                message.value(segment, 8).upper(), observed))
    return tuple(results)


def _merges(message: Hl7Message, default_authority: str) -> tuple[Merge, ...]:
    """ADT^A40: each PID with the MRG after it."""
    merges, pid = [], None
    for segment in message.segments:
        if segment[0] == "PID":
            pid = segment
        elif segment[0] == "MRG" and pid is not None:
            merges.append(Merge(_identifier_key(message, pid, 3, default_authority),
                                _identifier_key(message, segment, 1, default_authority)))
    if not merges:
        raise Hl7Error("the merge message has no PID/MRG pair")
    return tuple(merges)


def interpret(message: Hl7Message, default_authority: str, received_at: float) -> InboundMessage:
    """What ``message`` adds to the context. :class:`UnsupportedMessage` for a type the node does not
    take; :class:`Hl7Error` for a message it cannot use (no patient, no order, ...)."""
    kind = message_type(message)
    if kind not in SUPPORTED_TYPES:
        raise UnsupportedMessage(f"message type {kind[:16]} is not taken (only {', '.join(SUPPORTED_TYPES)})")
    control = message.field("MSH", 10)
    if not control:
        raise Hl7Error("MSH-10 (message control ID) is empty")
    key = _identifier_key(message, message.first("PID"), 3, default_authority)
    if not key:
        raise Hl7Error("PID-3 (patient identifier) is missing")
    sender = message.field("MSH", 3)
    if kind in {"ORM^O01", "OMI^O23"}:
        return InboundMessage(control, kind, sender, key, orders=_orders(message, key))
    if kind == "MDM^T02" or (kind == "ORU^R01" and is_report(message)):
        report = report_of(message, key)
        return InboundMessage(control, kind, sender, key, reports=(report,) if report else ())
    if kind == "ORU^R01":
        return InboundMessage(control, kind, sender, key, results=_results(message, key, received_at))
    if kind == "ADT^A40":
        return InboundMessage(control, kind, sender, key, merges=_merges(message, default_authority))
    return InboundMessage(control, kind, sender, key)  # A08: the node keeps no demographics to update
