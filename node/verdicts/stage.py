"""The verdicts stage: a radiologist's final report → the concordance of the AI's answer with it.

Either may come first. A report is kept as it arrives (:mod:`node.store.reports`); :meth:`ReportVerdicts.settle`
judges every kept report whose study the node has answered (the answer is kept, with the queued results, in
the quality record) and records its verdict. The node settles after each HL7 message it keeps and after each
study's results are queued, so a report that came first waits for its study's answer, until its message's
retention ends. A corrected report is judged again, and its verdict replaces the earlier one (the verdict
store keeps one per study, source and report key). When the node answers a newer version of a study (late
instances), each report already matched to it and still kept is judged again against the new answer, and its
verdict replaced the same way: the quality record judges the answer the EHR now shows. The answers kept since the
last settling are what is looked at (every answer at the first settling after start), never every report.
Feedback verdicts are a reader's judgement of what they saw, and are left as they are. Nothing of a report's
text is logged, nor any identifier in clear.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from node.ops.logging import get_logger, uid_hash
from node.routing import DomainSpec
from node.store import Store
from node.store.answers import Answer
from node.store.reports import Outdated, StoredReport
from node.store.verdicts import Concordance, Source, Verdict
from node.verdicts.concordance import concordance
from node.verdicts.labels import LabelFinder

log = get_logger("verdicts")


class ReportVerdicts:
    """Matches reports with the AI's answers and records each report's verdict."""

    def __init__(self, store: Store, tasks: Mapping[str, DomainSpec]) -> None:
        self._store = store
        self._finders = {name: LabelFinder(spec.labels, spec.synonyms) for name, spec in tasks.items()}
        self._lock = threading.Lock()  # the listener's threads and the scheduler's engine threads settle
        self._answers_seen = 0  # the answers table's last rowid whose study's reports were judged again if due

    def settle(self) -> int:
        """Judge every waiting report whose study the node has answered, and again every matched report whose
        study has a newer answer than its verdict judged; how many were judged. Never raises: a report that could
        not be judged now (the database) waits for the next settling."""
        judged = 0
        with self._lock:
            try:
                for stored, study_uid in self._store.reports.matches():
                    answer = self._store.answers.for_study(study_uid)
                    if answer is not None:
                        verdict = self._judge(stored, answer)
                        log.info("verdict.recorded", study=uid_hash(answer.study_instance_uid), version=answer.version,
                                 task=answer.task, source=Source.REPORT, verdict=str(verdict),
                                 corrected=stored.report.status == "C")
                        judged += 1
                outdated, seen = self._store.reports.outdated(self._answers_seen)
                for report in outdated:
                    judged += self._judge_again(report)
                self._answers_seen = seen  # only once all are judged: a failure looks at them again next time
            except Exception as exc:  # its message may quote the report: only its type is logged
                log.error("verdict.failed", source=Source.REPORT, error=type(exc).__name__)
        return judged

    def _judge_again(self, outdated: Outdated) -> int:
        """Judge a matched report against its study's newer answer, replacing its verdict; 1, or 0 when the
        answer is gone (retention purged the study in between)."""
        answer = self._store.answers.for_study(outdated.study_uid, outdated.latest)
        if answer is None:
            return 0
        earlier = self._store.verdicts.kept(outdated.study_uid, Source.REPORT, outdated.stored.report.key)
        verdict = self._judge(outdated.stored, answer)
        log.info("verdict.rejudged", study=uid_hash(answer.study_instance_uid), task=answer.task,
                 source=Source.REPORT, old_version=earlier.version if earlier else outdated.judged,
                 new_version=answer.version, old_verdict=earlier.verdict if earlier else None, new_verdict=str(verdict))
        return 1

    def _judge(self, stored: StoredReport, answer: Answer) -> Concordance:
        """Judge a report against an answer and keep the verdict (replacing the report key's earlier one)."""
        finder = self._finders.get(answer.task)
        found = finder.find(stored.report.text) if finder is not None else {}
        verdict = concordance(answer.labels, found)
        self._store.verdicts.record(Verdict(
            study_instance_uid=answer.study_instance_uid, version=answer.version, task=answer.task,
            source=Source.REPORT, source_key=stored.report.key, verdict=str(verdict), received_at=stored.received_at,
            ai_labels=answer.labels, found={label: str(mention) for label, mention in found.items()}))
        self._store.reports.matched(stored.id, answer.study_instance_uid, answer.version)
        return verdict
