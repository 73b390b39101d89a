"""NegEx (Chapman et al., *A simple algorithm for identifying negated findings and diseases in discharge
summaries*, J Biomed Inform 2001; the trigger lists of its later releases, negex.python's
``negex_triggers.txt``): whether a finding mentioned in a sentence is negated, uncertain or affirmed.

A sentence is cut into words; triggers are found longest first, left to right, and each mention of a
target is judged by the triggers around it within :data:`SCOPE_WORDS` words, in its sentence, with no
termination term between:

- pre-negation (``no``, ``without``, ``negative for`` …) before it, or post-negation (``is ruled out``,
  ``is absent`` …) after it: negated;
- pre-uncertainty (``possible``, ``cannot exclude``, ``suspicious for`` …) before it, or post-uncertainty
  (``cannot be excluded``, ``is not excluded`` …) after it: uncertain (it wins over a negation);
- pseudo-triggers (``no change``, ``not only``, ``gram negative`` …) are words that look like a trigger
  and are none: found as triggers (longest first), they hide the shorter trigger inside them;
- termination terms (``but``, ``however``, ``except`` …) end a trigger's scope.

Pure and total: no I/O, no exception on any text.

Written here rather than taken from a library: medspaCy would downgrade NumPy under the pinned stack and
negspaCy needs a trained spaCy model (docs/hl7-interface.md, "Radiology reports: the radiologist's verdict").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

#: How many words may lie between a trigger and the mention it governs (NegEx's window).
SCOPE_WORDS = 5

PRE_NEGATION = (
    "no", "not", "without", "denies", "denied", "deny", "absence of", "absent", "no evidence of",
    "no evidence", "no sign of", "no signs of", "no suspicious", "negative for", "free of", "rules out",
    "ruled out", "no new", "no definite", "no findings of", "no findings to indicate",
    "fails to reveal", "resolution of", "there is no", "there are no", "not demonstrated",
    "not seen", "not identified", "no radiographic evidence of", "no mammographic evidence of",
    "no acute", "never had", "never developed", "patient was not", "no cause of", "without evidence of",
    "without any evidence of", "without signs of", "with no", "removal of", "interval resolution of",
)
POST_NEGATION = (
    "is ruled out", "are ruled out", "was ruled out", "were ruled out", "has been ruled out",
    "have been ruled out", "is absent", "are absent", "is not seen", "are not seen", "not seen",
    "is not identified", "not identified", "not present", "is not present", "are not present",
    "has resolved", "have resolved", "resolved", "was negative", "is negative",
)
PRE_UNCERTAINTY = (
    "possible", "possibly", "probable", "probably", "may", "might", "may be", "could be", "can not exclude",
    "cannot exclude", "cannot rule out", "can not rule out", "cannot be ruled out", "not excluded",
    "not ruled out", "rule out", "r/o", "suspicious for", "suspicion of", "suspected", "questionable",
    "question of", "equivocal", "concerning for", "suggestive of", "suggest", "suggests", "likely",
    "versus", "vs", "differential diagnosis", "differential includes", "consider", "cannot be excluded",
    "presumed", "uncertain", "indeterminate", "borderline", "not definitely",
)
POST_UNCERTAINTY = (
    "cannot be excluded", "can not be excluded", "cannot be ruled out", "can not be ruled out",
    "is not excluded", "are not excluded", "not excluded", "is not ruled out", "not ruled out",
    "is possible", "are possible", "is suspected", "are suspected", "may be present", "is questioned",
    "is likely", "unlikely", "is unlikely", "not likely", "is not likely",
)
PSEUDO = (
    "no increase", "no change", "no significant change", "no interval change", "no suspicious change",
    "no definite change", "not only", "no further", "not necessarily", "not certain if", "not certain whether",
    "not cause", "not drain", "not extend", "not on", "not appreciably", "without difficulty",
    "gram negative", "not rule out", "no decrease", "not change", "not been", "not significantly changed",
    "not interval change", "no new change",
)
TERMINATION = (
    "but", "however", "although", "though", "except", "aside from", "apart from", "as a cause for",
    "as the cause of", "as the etiology of", "as the source of", "as the reason of", "cause of", "cause for",
    "causes of", "etiology of", "origin of", "source of", "secondary to", "which", "still", "nevertheless",
    "yet", "whereas", "otherwise", "with the exception of", "other possibilities of",
)


class Mention(StrEnum):
    """What a sentence says of a finding it names."""

    AFFIRMED = "affirmed"
    NEGATED = "negated"
    UNCERTAIN = "uncertain"


#: The trigger kinds, as the trigger table stores them.
_PRE_NEG, _POST_NEG, _PRE_UNC, _POST_UNC, _PSEUDO, _TERM = "pre-neg", "post-neg", "pre-unc", "post-unc", \
    "pseudo", "term"
_WORD = re.compile(r"[a-z0-9]+(?:\.\d+|['/][a-z0-9]+)*")
#: Sentence ends: . ! ? ; : (a point between digits is a decimal point) and line breaks.
_SENTENCE_END = re.compile(r"(?<!\d)[.!?](?!\d)|[;:\n\r]|\.(?=\s|$)")


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased."""
    return _WORD.findall(text.lower())


def sentences(text: str) -> list[list[str]]:
    """``text`` cut into sentences, each a list of its words (empty ones left out)."""
    return [found for part in _SENTENCE_END.split(text) if (found := words(part))]


@dataclass(frozen=True)
class Span:
    """Words [start, end) of a sentence that a phrase of the table matched, with the phrase's values."""

    start: int
    end: int
    values: frozenset[str]


class PhraseTable:
    """Phrases (word sequences) by their first word, longest first, each with its values (a phrase given
    twice, e.g. as a pre- and a post-trigger, has both)."""

    def __init__(self, phrases: Iterable[tuple[str, str]]) -> None:
        values: dict[tuple[str, ...], set[str]] = {}
        for phrase, value in phrases:
            split = tuple(words(phrase))
            if split:
                values.setdefault(split, set()).add(value)
        self._by_first: dict[str, list[tuple[tuple[str, ...], frozenset[str]]]] = {}
        for split, found in sorted(values.items(), key=lambda item: -len(item[0])):
            self._by_first.setdefault(split[0], []).append((split, frozenset(found)))

    def at(self, sentence: list[str], position: int) -> list[tuple[int, frozenset[str]]]:
        """Every phrase starting at ``position``: (its length, its values), longest first."""
        return [(len(phrase), found) for phrase, found in self._by_first.get(sentence[position], ())
                if tuple(sentence[position:position + len(phrase)]) == phrase]

    def spans(self, sentence: list[str]) -> list[Span]:
        """Non-overlapping matches, the longest at each word, left to right."""
        spans, position = [], 0
        while position < len(sentence):
            found = self.at(sentence, position)
            if found:
                length, values = found[0]
                spans.append(Span(position, position + length, values))
                position += length
            else:
                position += 1
        return spans


TRIGGERS = PhraseTable(
    [(t, _PSEUDO) for t in PSEUDO] + [(t, _TERM) for t in TERMINATION]
    + [(t, _PRE_UNC) for t in PRE_UNCERTAINTY] + [(t, _POST_UNC) for t in POST_UNCERTAINTY]
    + [(t, _PRE_NEG) for t in PRE_NEGATION] + [(t, _POST_NEG) for t in POST_NEGATION])
_ENDS_SCOPE = frozenset({_TERM, _PSEUDO})


def _kinds_in_scope(triggers: list[Span], start: int, end: int) -> set[str]:
    """The trigger kinds that govern the words [start, end): pre-triggers before, post-triggers after, within
    the window, with no termination term (or pseudo-trigger) between; triggers overlapping the words are
    part of the finding's own name and govern nothing."""
    kinds: set[str] = set()
    before = [t for t in triggers if t.end <= start]
    for trigger in reversed(before):
        if trigger.values & _ENDS_SCOPE or start - trigger.end > SCOPE_WORDS:
            break
        kinds |= trigger.values & {_PRE_NEG, _PRE_UNC}
    for trigger in (t for t in triggers if t.start >= end):
        if trigger.values & _ENDS_SCOPE or trigger.start - end > SCOPE_WORDS:
            break
        kinds |= trigger.values & {_POST_NEG, _POST_UNC}
    return kinds


def judge(sentence: list[str], start: int, end: int, triggers: list[Span] | None = None) -> Mention:
    """What ``sentence`` says of the finding named by its words [start, end) (``triggers``: the sentence's
    :data:`TRIGGERS` spans, when already found)."""
    spans = triggers if triggers is not None else TRIGGERS.spans(sentence)
    kinds = _kinds_in_scope([t for t in spans if t.end <= start or t.start >= end], start, end)
    if kinds & {_PRE_UNC, _POST_UNC}:
        return Mention.UNCERTAIN
    if kinds & {_PRE_NEG, _POST_NEG}:
        return Mention.NEGATED
    return Mention.AFFIRMED
