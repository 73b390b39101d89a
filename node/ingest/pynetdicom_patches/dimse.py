"""Seam: where a C-STORE request's dataset goes as its P-DATA fragments arrive.

pynetdicom's DIMSE provider (``receive_primitive``) decodes P-DATA into the message it assembles
(``message``); once a C-STORE-RQ's command set is decoded, its data fragments go to the message's
``_data_set_file`` if it has one (``write``, then ``file.flush()``) — the hook of pynetdicom's own chunked
reception. The request primitive carries that object as ``_dataset_file``, and the storage service closes it
and unlinks its ``name`` after the handler. :func:`hand_fragments` sets it from the node's ``open_file``.

pynetdicom decodes P-DATA inside its DUL state machine, where an exception (a fragment on a presentation
context never accepted: a ``KeyError``; a command set that does not decode: an ``AttributeError``) kills the DUL
thread without a word to the peer. :func:`hand_fragments` checks the context first and takes any such error
as an invalid PDU (the DUL's event 19): the state machine aborts the association (AA-8, an A-ABORT to the
peer), and the node is told why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

#: The pynetdicom functions this seam was written against: name -> SHA-256 of their source (its first 16 hex digits).
RELIES_ON = {
    "pynetdicom.dimse.DIMSEServiceProvider.receive_primitive": "5f99c86b14a15cef",
    "pynetdicom.dimse_messages.DIMSEMessage.decode_msg": "f51c777e841a76be",
    "pynetdicom.dimse_messages.DIMSEMessage.message_to_primitive": "f8f43d34e43450ef",
    "pynetdicom.service_class.StorageServiceClass.SCP": "63afca7fc6c6e7ee",
    "pynetdicom.fsm.DT_2": "9ec543394e0b49eb",
    "pynetdicom.fsm.AA_8": "06c83317f08831fd",
}

#: Opens the file-like object a C-STORE request's dataset goes to: (SOP Class UID, SOP Instance UID,
#: transfer syntax UID) -> an object with ``write``, ``file.flush``, ``close`` and ``name``.
OpenFile = Callable[[str, str, str], Any]
#: Told why an association is aborted for what it sent: a reason without patient data.
OnInvalid = Callable[[str], object]
#: The DUL's event for an invalid PDU (PS3.8 9.2.3): in Sta6 the state machine aborts (AA-8).
INVALID_PDU = "Evt19"


def hand_fragments(association: Association, open_file: OpenFile, on_invalid: OnInvalid) -> None:
    """Make ``association`` (an acceptor, before it starts) write each C-STORE request's data fragments to an
    object from ``open_file`` instead of assembling them in memory, and abort it (telling ``on_invalid``
    why) on P-DATA it cannot take."""
    dimse = association.dimse
    receive = dimse.receive_primitive

    def receive_one(context_id: int, data: bytes) -> None:
        one = P_DATA()
        one.presentation_data_value_list = [[context_id, data]]  # type: ignore[list-item]  # its setter wants lists, its annotation says tuples
        receive(one)
        message = dimse.message
        if isinstance(message, C_STORE_RQ) and message._data_set_file is None and message.context_id is not None:
            command = message.command_set  # its dataset follows
            syntax = association._accepted_cx[message.context_id].transfer_syntax[0]
            message._data_set_file = open_file(str(command.AffectedSOPClassUID or ""),
                                               str(command.AffectedSOPInstanceUID or ""), str(syntax))

    def receive_primitive(primitive: P_DATA) -> None:
        # One fragment at a time, so that a request's dataset goes to its file from the fragment after the
        # last of its command set, even when both travel in one P-DATA-TF PDU.
        for context_id, data in primitive.presentation_data_value_list:
            if context_id not in association._accepted_cx:
                _abort(f"P-DATA on presentation context {context_id}, which was not accepted")
                return
            try:
                receive_one(context_id, data)
            except Exception as exc:  # pynetdicom's decoders raise anything on bad bytes
                _abort(f"DIMSE message does not decode ({type(exc).__name__})")
                return

    def _abort(reason: str) -> None:
        dimse.message = None
        on_invalid(reason)
        association.dul.event_queue.put(INVALID_PDU)

    dimse.receive_primitive = receive_primitive  # type: ignore[method-assign]  # patching pynetdicom, behind the version gate


def file_of(request: C_STORE) -> Any:
    """The object a C-STORE request's dataset was written to (None: it came without one)."""
    return getattr(request, "_dataset_file", None)


def pending_files(association: Association) -> list[Any]:
    """The objects of the requests ``association`` has not served: the one still arriving, and those
    received but still queued (None where a request has none)."""
    dimse = association.dimse
    pending = [getattr(dimse.message, "_data_set_file", None)]
    return pending + [file_of(primitive) for _, primitive in list(dimse.msg_queue.queue)]
