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
from collections.abc import Callable, Mapping
from functools import partial
from typing import TypeVar

from node.ops.logging import get_logger, uid_hash
from node.routing import DomainSpec
from node.store import Store
from node.store.answers import Answer
from node.store.reports import Outdated, StoredReport
from node.store.verdicts import Concordance, Source, Verdict
from node.verdicts.concordance import concordance
from node.verdicts.labels import LabelFinder

log = get_logger("verdicts")
T = TypeVar("T")


def _guarded(step: Callable[[], T], failed: T) -> T:
    """``step``'s result, or ``failed`` when it raised (logged by the error's type only: its message may
    quote the report)."""
    try:
        return step()
    except Exception as exc:
        log.error("verdict.failed", source=Source.REPORT, error=type(exc).__name__)
        return failed


class ReportVerdicts:
    """Matches reports with the AI's answers and records each report's verdict."""

    def __init__(self, store: Store, tasks: Mapping[str, DomainSpec]) -> None:
        self._store = store
        self._finders = {name: LabelFinder(spec.labels, spec.synonyms) for name, spec in tasks.items()}
        self._lock = threading.Lock()  # the listener's threads and the scheduler's engine threads settle
        # The answers table's last rowid whose study's reports were judged again where due. Rowids only grow
        # while no answer is deleted (none is: the quality record outlives retention); it starts at 0 at each
        # start, so the first settling looks at every answer once.
        self._answers_seen = 0

    def settle(self) -> int:
        """Judge every waiting report whose study the node has answered, and again every matched report whose
        study has a newer answer than its verdict judged; how many were judged. Never raises: a report that could
        not be judged now (the database) is logged by its error's type and looked at again at the next settling;
        the others go on."""
        with self._lock:
            return self._judge_waiting() + self._judge_outdated()

    def _judge_waiting(self) -> int:
        """Judge each waiting report whose study is answered; how many were."""
        waiting: list[tuple[StoredReport, str]] = _guarded(self._store.reports.matches, [])
        return sum(_guarded(partial(self._judge_first, stored, study_uid), 0) for stored, study_uid in waiting)

    def _judge_outdated(self) -> int:
        """Judge again each matched report whose study has a newer answer; how many were."""
        nothing: tuple[list[Outdated], int | None] = ([], None)
        outdated, seen = _guarded(partial(self._store.reports.outdated, self._answers_seen), nothing)
        results: list[int | None] = [_guarded(partial(self._judge_again, report), None) for report in outdated]
        if seen is not None and None not in results:
            self._answers_seen = seen  # only once all are judged: a failure is looked at again next time
        return sum(result for result in results if result is not None)

    def _judge_first(self, stored: StoredReport, study_uid: str) -> int:
        """Judge a waiting report against its study's answer; 1, or 0 while the study is not answered."""
        answer = self._store.answers.for_study(study_uid)
        if answer is None:
            return 0
        verdict = self._judge(stored, answer)
        log.info("verdict.recorded", study=uid_hash(answer.study_instance_uid), version=answer.version,
                 task=answer.task, source=Source.REPORT, verdict=str(verdict), corrected=stored.report.status == "C")
        return 1

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
