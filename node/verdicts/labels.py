"""Which labels of a task's closed set a radiology report affirms, negates or names with uncertainty.

Each label is named by itself and by its synonyms (the routing rules' ``synonyms``); a name is found as
whole words, case-insensitive, in each sentence, and :mod:`node.verdicts.negex` judges each mention. A
label mentioned more than once is affirmed when any mention affirms it, else uncertain when any mention is
uncertain, else negated. Labels the report never names are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from node.verdicts.negex import TRIGGERS, Mention, PhraseTable, judge, sentences

#: Which of two mentions of one label wins: the higher.
_RANK = {Mention.NEGATED: 0, Mention.UNCERTAIN: 1, Mention.AFFIRMED: 2}


class LabelFinder:
    """Finds a closed label set's mentions in report text."""

    def __init__(self, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]]) -> None:
        self.labels = tuple(labels)
        self._names = PhraseTable((name, label) for label in self.labels
                                  for name in (label, *synonyms.get(label, ())))

    def find(self, text: str) -> dict[str, Mention]:
        """Each label the text names, with what it says of it."""
        found: dict[str, Mention] = {}
        for sentence in sentences(text):
            triggers = None
            for position in range(len(sentence)):
                for length, labels in self._names.at(sentence, position):
                    triggers = triggers if triggers is not None else TRIGGERS.spans(sentence)
                    mention = judge(sentence, position, position + length, triggers)
                    for label in labels:
                        if label not in found or _RANK[mention] > _RANK[found[label]]:
                            found[label] = mention
        return {label: found[label] for label in self.labels if label in found}
