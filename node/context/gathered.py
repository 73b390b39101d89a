"""The context stage: a routed study → the patient's context its task asks for (:class:`Gathered`).

The order and labs come from the store; priors and an ECG also from the PACS when one is configured.
The scheduler runs this stage on its own bounded pool (``context.gather_workers``), so a slow PACS
never holds up image decoding; when gathering outlasts ``context.gather_seconds``, the study is read
with what the node already holds (the PACS costs the priors, never the read).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from node.context.gather import ContextGatherer, PatientContext
from node.context.missing import not_gathered
from node.routing import Routed


@dataclass(frozen=True)
class Gathered:
    """A routed study and the patient's context that goes with it."""

    routed: Routed
    context: PatientContext


def gather(routed: Routed, gatherer: ContextGatherer | None, takes_ecg: bool, now: float | None = None,
           ask_pacs: bool = True) -> Gathered:
    """The context stage: the context the routed study's task asks for (none without a gatherer;
    an ECG only for a model that takes one; the PACS only with ``ask_pacs``; without a gatherer, the order
    and labs asked for are said to be missing for want of messages)."""
    if gatherer is None:
        return Gathered(routed, PatientContext(missing=not_gathered(routed.task.spec.context)))
    now = now if now is not None else datetime.now().timestamp()
    identity = gatherer.identify(routed.files, now)
    return Gathered(routed, gatherer.gather(identity, routed.task.spec.context, takes_ecg, now, ask_pacs))
