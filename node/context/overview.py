"""What the node holds of a patient's context, and what it would send with a study, for operators
(``qoq-node context``): printed on the terminal, never logged."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from node.config import NodeConfig
from node.context.gather import ContextGatherer, StudyIdentity
from node.context.text import context_text, lab_line
from node.ingest.hl7_inbound import interpret
from node.ingest.hl7v2 import Hl7Error, parse, split_messages
from node.routing import Router, StudyHeader
from node.store import Store


def _when(moment: float | None) -> str:
    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="minutes") if moment else "-"


def describe_patient(store: Store, key: str) -> list[str]:
    """Everything kept for the patient with ``key``: messages, orders, lab results, studies."""
    clinical = store.clinical
    surviving = clinical.resolve(key)
    lines = [f"patient {key}" + (f" (merged into {surviving})" if surviving != key else "")]
    lines += [f"  message {m.message_type} from {m.sending_application} received {_when(m.received_at)}"
              for m in clinical.messages_of(key)]
    lines += [f"  order {o.accession or o.filler or o.placer}: {o.procedure or '-'}; reason: {o.reason or '-'}; "
              f"clinical information: {o.clinical_info or '-'}; priority {o.priority or '-'}"
              for o in clinical.orders_of(key)]
    lines += [f"  lab {lab_line(r, None).split(';')[0]}; observed {_when(r.observed_at)}"
              for r in clinical.results_of(key)]
    lines += [f"  study {s.study_uid} {s.modality or '-'} of {_when(s.study_time)} "
              f"({'retrieved from the PACS' if s.retrieved else 'received'})" for s in clinical.studies_of(key)]
    return lines if len(lines) > 1 else [*lines, "  nothing is kept for this patient"]


def describe_study(store: Store, config: NodeConfig, study_uid: str) -> list[str]:
    """What would go with a study the node holds (its task's policy applied to what is kept now; the PACS
    is not queried)."""
    files = store.instances.study_files(study_uid)
    if not files:
        return [f"study {study_uid}: the node holds no such study"]
    routed = Router.from_file(config.routing.rules).route(StudyHeader.read(files[0]))
    if isinstance(routed, str):
        return [f"study {study_uid}: {routed}"]
    gatherer = ContextGatherer(store, config.storage.root, config.context.default_authority)
    identity = StudyIdentity.read(files[0], config.context.default_authority)
    context = gatherer.gather(identity, routed.spec.context, takes_ecg=True, now=time.time())
    ecg = context.ecg
    text = context_text(context, 1, identity.modality, ecg is not None) or (
        "(no context: the task's policy gathers none, or nothing is kept for this patient)")
    return [f"study {study_uid}: task {routed.name}, patient {identity.patient_key or '(no Patient ID)'}",
            *[f"  prior {p.study_uid} ({len(p.files)} files)" for p in context.priors],
            *([f"  ECG {ecg.study_uid} (given to models that take the signal)"] if ecg is not None else []),
            *[f"  {missing.item} missing: {missing.text}" for missing in context.missing],
            "  context as the prompt would state it:", *(f"    {line}" for line in text.split("\n"))]


def load_messages(store: Store, path: Path, default_authority: str) -> list[str]:
    """Keep the orders and lab results of a file of HL7 messages (``qoq-node infer --context``); the
    problems, one per message that could not be used."""
    problems = []
    for number, text in enumerate(split_messages(path.read_text(encoding="utf-8", errors="replace")), start=1):
        try:
            store.clinical.record_message(interpret(parse(text), default_authority, time.time()), str(path),
                                          time.time())
        except Hl7Error as exc:
            problems.append(f"{path}: message {number}: {exc}")
    return problems
