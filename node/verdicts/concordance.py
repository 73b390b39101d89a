"""The concordance of the AI's answer with what a radiologist's report says of the task's closed label set.

With A the labels the AI answered and, among the labels the report names, P those it affirms and N those
it negates (an uncertain mention is neither):

- **agree**: P equals A (and A is not empty): the report affirms every label the AI gave and no other;
- **partial**: P and A overlap, but P is not A (a label missed or one too many);
- **disagree**: no overlap, and the report negates a label of A or affirms another label;
- **unknown**: nothing decidable: the report affirms no label and negates none of A's (labels it leaves
  unmentioned or only names with uncertainty).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from node.store.verdicts import Concordance
from node.verdicts.negex import Mention

__all__ = ["Concordance", "concordance"]


def concordance(answered: Collection[str], found: Mapping[str, Mention]) -> Concordance:
    """How the report's ``found`` labels compare with the AI's ``answered`` labels."""
    affirmed = {label for label, mention in found.items() if mention == Mention.AFFIRMED}
    negated = {label for label, mention in found.items() if mention == Mention.NEGATED}
    answer = set(answered)
    if answer and affirmed == answer:
        return Concordance.AGREE
    if affirmed & answer:
        return Concordance.PARTIAL
    if affirmed or negated & answer:
        return Concordance.DISAGREE
    return Concordance.UNKNOWN
