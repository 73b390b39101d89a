"""The verdicts stage: a radiologist's final report → the concordance of the AI's answer with it.

Either may come first. A report is kept as it arrives (:mod:`node.store.reports`); :meth:`ReportVerdicts.settle`
judges every kept report whose study the node has answered (the answer is kept, with the queued results, in
the quality record) and records its verdict. The node settles after each HL7 message it keeps and after each
study's results are queued, so a report that came first waits for its study's answer, until its message's
retention ends. A corrected report is judged again, and its verdict replaces the earlier one (the verdict
store keeps one per study, source and report key). Nothing of a report's text is logged.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from node.ops.logging import get_logger, uid_hash
from node.routing import DomainSpec
from node.store import Store
from node.store.answers import Answer
from node.store.reports import StoredReport
from node.store.verdicts import Source, Verdict
from node.verdicts.concordance import concordance
from node.verdicts.labels import LabelFinder

log = get_logger("verdicts")


class ReportVerdicts:
    """Matches reports with the AI's answers and records each report's verdict."""

    def __init__(self, store: Store, tasks: Mapping[str, DomainSpec]) -> None:
        self._store = store
        self._finders = {name: LabelFinder(spec.labels, spec.synonyms) for name, spec in tasks.items()}
        self._lock = threading.Lock()  # the listener's threads and the scheduler's engine threads settle

    def settle(self) -> int:
        """Judge every waiting report whose study the node has answered; how many were judged. Never raises:
        a report that could not be judged now (the database) waits for the next settling."""
        judged = 0
        with self._lock:
            try:
                for stored, study_uid in self._store.reports.matches():
                    answer = self._store.answers.for_study(study_uid)
                    if answer is not None:
                        self._judge(stored, answer)
                        judged += 1
            except Exception as exc:  # its message may quote the report: only its type is logged
                log.error("verdict.failed", source=Source.REPORT, error=type(exc).__name__)
        return judged

    def _judge(self, stored: StoredReport, answer: Answer) -> None:
        finder = self._finders.get(answer.task)
        found = finder.find(stored.report.text) if finder is not None else {}
        verdict = concordance(answer.labels, found)
        self._store.verdicts.record(Verdict(
            study_instance_uid=answer.study_instance_uid, version=answer.version, task=answer.task,
            source=Source.REPORT, source_key=stored.report.key, verdict=str(verdict), received_at=stored.received_at,
            ai_labels=answer.labels, found={label: str(mention) for label, mention in found.items()}))
        self._store.reports.matched(stored.id, answer.study_instance_uid)
        log.info("verdict.recorded", study=uid_hash(answer.study_instance_uid), version=answer.version,
                 task=answer.task, source=Source.REPORT, verdict=str(verdict), corrected=stored.report.status == "C")
