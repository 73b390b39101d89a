"""A read's answer for the quality record: its labels as the task's closed set spells them (anything else is
:data:`OTHER`: model output is untrusted and metric labels stay bounded), and the equipment of its images."""

from __future__ import annotations

from collections.abc import Sequence

from node.dicom_files import read_attributes
from node.ops.metrics import Metrics
from node.reading import Read
from node.store import Answer, QueuedItem, Store

#: An answer label outside the task's closed set.
OTHER = "other"
#: The bin of a study answered with no label (for the label distribution).
NONE = "none"
#: Equipment names are kept to this many characters.
EQUIPMENT_CHARS = 64


def closed_labels(labels: Sequence[str], closed_set: Sequence[str]) -> tuple[str, ...]:
    """``labels`` spelled as ``closed_set`` spells them (case-insensitive), :data:`OTHER` for the rest, each once."""
    spelled = {label.casefold(): label for label in closed_set}
    return tuple(dict.fromkeys(spelled.get(label.casefold(), OTHER) for label in labels))


def _header(read: Read) -> tuple[str, str, str]:
    """Manufacturer, model name and Accession Number of the study's first model input (its first file when it
    has none), '' for what the header does not say, or all three for a file that cannot be read now."""
    prepared = read.prepared
    path = prepared.inputs[0].path if prepared.inputs else prepared.files[0]
    try:
        header = read_attributes(path, ("Manufacturer", "ManufacturerModelName", "AccessionNumber"))
    except Exception:  # a header the read itself got past: the quality record never fails a study's results
        return "", "", ""
    return (str(header.get("Manufacturer", "") or "")[:EQUIPMENT_CHARS],
            str(header.get("ManufacturerModelName", "") or "")[:EQUIPMENT_CHARS],
            str(header.get("AccessionNumber", "") or ""))


def equipment(read: Read) -> tuple[str, str]:
    """Manufacturer and model name of the images a read was given ('' for what the header does not say)."""
    return _header(read)[:2]


def answer_of(store: Store, read: Read, version: int, now: float) -> Answer:
    """The quality record's row for a study version the node answered (its Accession Number kept as
    ``store``'s key of it)."""
    prepared = read.prepared
    manufacturer, model, accession = _header(read)
    return Answer(prepared.study_uid, version, prepared.task.name,
                  closed_labels(read.findings.labels, prepared.task.spec.labels), manufacturer, model, now,
                  store.answers.accession_key(accession))



def queue_answered(store: Store, metrics: Metrics, read: Read, version: int, items: list[QueuedItem],
                   now: float) -> bool:
    """The queue stage's commit (:meth:`~node.store.studies.Studies.queue_results`) with the read's answer kept
    in its transaction; once committed, the answer is counted by its task and each of its labels (:data:`NONE`
    for none). False when a newer version superseded the read (nothing kept, nothing counted)."""
    answer = answer_of(store, read, version, now)
    if not store.studies.queue_results(answer.study_instance_uid, version, items, now, answer):
        return False
    for label in answer.labels or (NONE,):
        metrics.answers.labels(answer.task, label).inc()
    return True
