"""The PACS side of the survey: a period's studies by C-FIND, study level paged by date (a day, or halves
of it while a page reaches the PACS's limit), then each study's series (modality, body part, series
description and the other routing attributes; no pixels), as the headers routing reads.

A page has reached the limit when the PACS ends it with Cancel (0xFE00, Orthanc's ``LimitFindResults``)
or Out of Resources (0xA700), or when it holds ``page_limit`` studies. Its window is then halved by
Study Time, down to a second. Halved windows miss studies that carry no Study Time (range matching
excludes them); whole days do not.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import date, timedelta

from pydicom.dataset import Dataset
from pynetdicom import Association

from node.context.pacs import PacsError, find_matches
from node.routing import NOT_READ_MODALITIES, StudyHeader

#: Study-level attributes routing reads (besides the study's UID, date and time).
STUDY_KEYS = ("StudyDescription", "RequestedProcedureDescription", "RequestedProcedureCodeSequence",
              "ProcedureCodeSequence", "PatientAge", "PatientBirthDate", "ModalitiesInStudy")
#: Series-level attributes routing reads (some are instance attributes a PACS answers from a series' instance).
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "BodyPartExamined", "SeriesDescription", "SOPClassUID",
               "ViewPosition", "ContrastBolusAgent", "AnatomicRegionSequence")
#: Final statuses that say the PACS stopped a page at its limit: Cancel (Orthanc), Out of Resources.
LIMIT_STATUSES = (0xFE00, 0xA700)
_DAY_SECONDS = 86_400


@dataclass(frozen=True)
class Window:
    """Studies dated ``day`` with a Study Time from ``start`` to ``end`` seconds into it (the whole day:
    no time asked for)."""

    day: date
    start: int = 0
    end: int = _DAY_SECONDS - 1

    @property
    def whole_day(self) -> bool:
        """Whether the window is the whole day."""
        return self.start == 0 and self.end == _DAY_SECONDS - 1

    def halves(self) -> tuple[Window, Window] | None:
        """The window's two halves by Study Time; None for a window of one second."""
        if self.start >= self.end:
            return None
        middle = (self.start + self.end) // 2
        return Window(self.day, self.start, middle), Window(self.day, middle + 1, self.end)

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d}" + ("" if self.whole_day else f" {_clock(self.start)}-{_clock(self.end)}")


def _clock(seconds: int, separator: str = ":") -> str:
    return separator.join(f"{part:02d}" for part in (seconds // 3600, seconds // 60 % 60, seconds % 60))


def days(since: date, until: date) -> list[Window]:
    """One window per day from ``since`` to ``until``, both included, oldest first."""
    return [Window(since + timedelta(days=n)) for n in range((until - since).days + 1)]


@dataclass(frozen=True)
class FoundStudy:
    """A study the survey found: its UID and the headers of its series (at least one) that routing reads."""

    study_uid: str
    headers: tuple[StudyHeader, ...]

    @property
    def description(self) -> str:
        """The study's StudyDescription (for the operator's eyes only)."""
        return self.headers[0].study_description


def _study_query(window: Window) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyDate = f"{window.day:%Y%m%d}"
    query.StudyTime = "" if window.whole_day else f"{_clock(window.start, '')}-{_clock(window.end, '')}"
    query.StudyInstanceUID = ""
    for keyword in STUDY_KEYS:
        setattr(query, keyword, "")
    return query


def _series_query(study_uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid
    for keyword in SERIES_KEYS:
        setattr(query, keyword, "")
    return query


class StudyFinder:
    """C-FIND of one period's studies on one open association (``PacsPriors.query_association``), and of their
    series on others, one query at a time on each (so a thread pool can ask several at once)."""

    def __init__(self, assoc: Association, series_assocs: Sequence[Association], page_limit: int = 0) -> None:
        self._assoc, self._page_limit = assoc, page_limit
        self._free: queue.SimpleQueue[Association] = queue.SimpleQueue()
        for series_assoc in series_assocs:
            self._free.put(series_assoc)
        self.incomplete: list[Window] = []  # one-second windows still at the PACS's limit

    def _page(self, window: Window) -> tuple[list[Dataset], bool]:
        """One window's studies, and whether the page reached the PACS's limit."""
        page, limited = [], False
        try:
            for identifier in find_matches(self._assoc, _study_query(window)):
                if identifier.get("StudyInstanceUID"):
                    page.append(identifier)
        except PacsError as exc:
            if exc.status not in LIMIT_STATUSES:
                raise
            limited = True
        return page, limited or bool(self._page_limit and len(page) >= self._page_limit)

    def studies(self, window: Window) -> list[Dataset]:
        """A window's study-level matches, halving it while a page reaches the limit; a one-second window
        still at the limit gives what it got and is kept in ``incomplete``."""
        page, limited = self._page(window)
        halves = window.halves() if limited else None
        if halves is None:
            if limited:
                self.incomplete.append(window)
            return page
        return [study for half in halves for study in self.studies(half)]

    def series(self, study: Dataset) -> FoundStudy:
        """A study-level match with its series' headers (those of images and waveforms; the first series when
        it has none, the study alone when no series answers)."""
        uid = str(study.StudyInstanceUID)
        assoc = self._free.get()
        try:
            answers = list(find_matches(assoc, _series_query(uid)))
        finally:
            self._free.put(assoc)
        headers = []
        for series in answers:
            merged = Dataset()
            merged.update(study)
            merged.update(series)
            headers.append(StudyHeader.from_dataset(merged))
        read = [h for h in headers if h.modality.upper() not in NOT_READ_MODALITIES]
        return FoundStudy(uid, tuple(read or headers[:1] or [StudyHeader.from_dataset(study)]))


def survey_studies(finder: StudyFinder, windows: list[Window], max_studies: int,
                   progress: Callable[[int, Window], None], pool: Executor) -> Iterator[FoundStudy]:
    """Each study of the windows with its series (asked on ``pool``), once, up to ``max_studies``, in the order
    the PACS gave them; ``progress`` is told the windows done and the one being asked, before each."""
    seen: set[str] = set()
    for done, window in enumerate(windows):
        progress(done, window)
        new = {str(study.StudyInstanceUID): study for study in finder.studies(window)
               if str(study.StudyInstanceUID) not in seen}
        batch = list(new.values())[:max_studies - len(seen)]
        seen.update(new)
        yield from pool.map(finder.series, batch)
        if len(seen) >= max_studies:
            return
    progress(len(windows), windows[-1])
