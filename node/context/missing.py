"""Why the order or lab results a study's task asks for did not go with it, in words without patient data
(``infer --json``, ``qoq-node context``; in ``serve`` the ``context.missing`` log event and
``qoqnode_context_missing_total{item, reason}``).

Patients are matched by identifier *and* assigning authority: an HL7 message whose PID-3 names an authority
does not match a study whose Patient ID names none (no IssuerOfPatientID) unless ``context.default_authority``
supplies it. That mismatch is the usual cause, and the one said first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.routing import ContextPolicy
from node.store.clinical import ClinicalStore

#: Reasons, by code (the metric's label) — each said of one item, ``order`` or ``labs``.
REASONS = {
    "no_patient_id": "the study has no Patient ID, so no message can be matched to it",
    "other_patient": "an order with the study's accession or order number is kept for another patient identity "
                     "(the Patient ID or its assigning authority differs: set context.default_authority, or have the "
                     "modality send IssuerOfPatientID)",
    "no_issuer": "nothing is kept for the study's patient; its Patient ID names no issuer and "
                 "context.default_authority is unset, so messages whose PID-3 names an assigning authority do not "
                 "match it",
    "no_order": "no order with the study's accession, placer or filler number is kept for its patient",
    "no_labs": "no result of the task's LOINC codes in its window before the study is kept for its patient",
    "no_messages": "no HL7 messages were given (qoq-node infer --context FILE)",
}


@dataclass(frozen=True)
class Missing:
    """One item of context a study's task asks for that did not go with it, and why."""

    item: str  # "order" or "labs"
    reason: str  # a key of REASONS

    @property
    def text(self) -> str:
        """Why, in words (no patient data)."""
        return REASONS[self.reason]

    def describe(self) -> dict[str, str]:
        """For ``infer --json``: the item, the reason's code and its words."""
        return {"item": self.item, "reason": self.reason, "text": self.text}


def _asked(policy: ContextPolicy, order_found: bool, labs_found: bool) -> list[str]:
    """The items ``policy`` asks for that were not found."""
    return [item for item, wanted in (("order", policy.order and not order_found),
                                      ("labs", policy.labs is not None and not labs_found)) if wanted]


def not_gathered(policy: ContextPolicy) -> tuple[Missing, ...]:
    """The order and labs ``policy`` asks for, missing because no messages were given (``infer`` without
    ``--context``)."""
    return tuple(Missing(item, "no_messages") for item in _asked(policy, False, False))


def missing_context(clinical: ClinicalStore, policy: ContextPolicy, patient_key: str, authority: str,
                    order_numbers: Sequence[str], order_found: bool, labs_found: bool) -> tuple[Missing, ...]:
    """What of the order and labs ``policy`` asks for was not found for the study, and why (``authority``: the
    one its patient key was made with, the study's issuer or ``context.default_authority``)."""
    items = _asked(policy, order_found, labs_found)
    if not items:
        return ()
    if not patient_key:
        return tuple(Missing(item, "no_patient_id") for item in items)
    unmatched = not authority and not clinical.messages_of(patient_key)
    reasons = []
    for item in items:
        if item == "order" and clinical.order_kept_elsewhere(patient_key, tuple(order_numbers)):
            reasons.append(Missing(item, "other_patient"))
        else:
            reasons.append(Missing(item, "no_issuer" if unmatched else f"no_{item}"))
    return tuple(reasons)
