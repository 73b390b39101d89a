"""``qoq-node routing survey --since 7d [--pacs NAME] [--json]``: before go-live, where a period's studies
in the PACS would go — studies per task and per skip reason, with each group's top StudyDescriptions —
from their C-FIND headers alone (no pixels, no HL7 orders).

A progress bar goes to stderr. Ctrl-C, or a PACS that refuses a C-FIND or stops answering, ends the
survey with what it has: the tally of the studies surveyed so far is printed, and the error says how far
it got. Descriptions are shown on the terminal only, never logged.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path

from node.config import ConfigError, DicomDestination, NodeConfig, load_config
from node.context.pacs import PacsError, PacsPriors
from node.routing import Router
from node.survey.query import StudyFinder, Window, days, survey_studies
from node.survey.tally import Tally

_BAR = 30


def since(text: str) -> timedelta | date:
    """``--since``: ``Nd`` (days) or ``Nw`` (weeks) before ``--until``, or a date (YYYY-MM-DD)."""
    found = re.fullmatch(r"(\d{1,5})([dw])", text.strip().lower())
    if found:
        return timedelta(days=int(found.group(1)) * (7 if found.group(2) == "w" else 1))
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes Nd, Nw or YYYY-MM-DD, not {text!r}") from None


def surveyed_pacs(config: NodeConfig, name: str | None) -> DicomDestination:
    """The ``destinations.dicom`` entry to survey: ``--pacs``, else ``context.pacs``, else the only one."""
    pacs = {d.name: d for d in config.destinations.dicom}
    name = name or config.context.pacs or (next(iter(pacs)) if len(pacs) == 1 else None)
    if name is None or name not in pacs:
        raise ConfigError(f"routing survey asks a destinations.dicom entry (--pacs NAME); "
                          f"{'none is configured' if not pacs else 'configured: ' + ', '.join(sorted(pacs))}")
    return pacs[name]


class Progress:
    """A plain-text progress bar on stderr (redrawn in place on a terminal, a line per day elsewhere), and
    how far the survey got."""

    def __init__(self, windows: list[Window]) -> None:
        self.windows, self.done, self.at, self.studies = windows, 0, windows[0], 0
        self._tty = sys.stderr.isatty()

    def window(self, done: int, at: Window) -> None:
        """The survey has finished ``done`` days and asks ``at``."""
        self.done, self.at = done, at
        self._draw()

    def study(self) -> None:
        """One more study surveyed."""
        self.studies += 1
        if self._tty and self.studies % 25 == 0:
            self._draw()

    def _draw(self) -> None:
        filled = _BAR * self.done // len(self.windows)
        where = "done" if self.done == len(self.windows) else f"asking {self.at}"
        text = (f"survey [{'#' * filled}{'.' * (_BAR - filled)}] {self.done}/{len(self.windows)} days, "
                f"{self.studies} studies, {where}")
        sys.stderr.write(f"\r{text}\033[K" if self._tty else f"{text}\n")
        sys.stderr.flush()

    def where(self) -> str:
        """How far the survey got, in words."""
        return (f"while asking for studies dated {self.at} (day {self.done + 1} of {len(self.windows)}), "
                f"after {self.studies} studies")


def cmd_routing_survey(args: argparse.Namespace) -> int:
    """Survey the PACS and print the tally; 1 when the PACS failed it, 130 when cancelled (the tally of what
    was surveyed is printed either way)."""
    config = load_config(args.config)
    destination = surveyed_pacs(config, args.pacs)
    until = args.until or date.today()
    first = until - args.since if isinstance(args.since, timedelta) else args.since
    if first > until:
        print(f"qoq-node: routing survey: --since {first} is after --until {until}", file=sys.stderr)
        return 2
    tally, windows = Tally(Router.from_file(config.routing.rules)), days(first, until)
    progress, stopped, status = Progress(windows), "", 0
    try:
        with ExitStack() as stack:
            # (entered first, left last: on Ctrl-C the associations are aborted before the pool is waited for)
            pool = stack.enter_context(ThreadPoolExecutor(args.associations))
            pacs = PacsPriors(destination, config.dicom.ae_title)
            assoc, *series_assocs = [stack.enter_context(pacs.query_association())
                                     for _ in range(args.associations + 1)]
            stack.callback(pool.shutdown, wait=False, cancel_futures=True)  # (left first: no query waits to start)
            finder = StudyFinder(assoc, series_assocs, args.page_limit)
            for study in survey_studies(finder, windows, args.max_studies, progress.window, pool):
                tally.add(study)
                progress.study()
        if tally.studies >= args.max_studies:
            stopped = f"bounded by --max-studies {args.max_studies}: later studies were not surveyed"
        elif finder.incomplete:
            stopped = ("these one-second windows held more studies than the PACS answers for one query, and some "
                       f"were not surveyed: {', '.join(map(str, finder.incomplete))}")
    except PacsError as exc:
        stopped, status = f"the PACS {destination.name} failed the survey {progress.where()}: {exc}", 1
    except KeyboardInterrupt:
        stopped, status = f"cancelled {progress.where()}", 130
    sys.stderr.write("\n" if sys.stderr.isatty() else "")
    heading = f"routing survey of {destination.name} (AE {destination.ae_title}), studies dated {first} to {until}"
    if args.json:
        print(json.dumps({"pacs": destination.name, "since": str(first), "until": str(until),
                          "complete": not stopped, "stopped": stopped or None, **tally.as_json(args.top)}, indent=2))
    else:
        print("\n".join([heading, *tally.lines(args.top)]))
    if stopped:
        print(f"qoq-node: routing survey {'stopped' if status else 'incomplete'}: {stopped}"
              + ("; the counts are of the studies surveyed before" if status else ""), file=sys.stderr)
    return status


def add_survey(routing_commands: argparse._SubParsersAction) -> None:
    """Add ``survey`` to the ``routing`` command group."""
    text = ("Ask the PACS (C-FIND, study then series level, no pixels) for a period's studies and print where "
            "routing would send them: studies per task and per skip reason, with the top StudyDescriptions.")
    survey = routing_commands.add_parser("survey", help=text, description=text)
    survey.add_argument("--config", type=Path, default=None, help="node.yaml (default: built-in defaults)")
    survey.add_argument("--since", type=since, default=timedelta(days=7),
                        help="Nd or Nw before --until, or YYYY-MM-DD (default 7d)")
    survey.add_argument("--until", type=date.fromisoformat, default=None, help="last day, YYYY-MM-DD (default today)")
    survey.add_argument("--pacs", default=None, help="the destinations.dicom entry to ask "
                        "(default: context.pacs, else the only one)")
    survey.add_argument("--max-studies", type=int, default=10_000, help="studies at most (default 10000)")
    survey.add_argument("--page-limit", type=int, default=0, help="the most studies the PACS answers one C-FIND "
                        "with, when it does not say it stopped there (default: trust its status)")
    survey.add_argument("--associations", type=int, default=4, choices=range(1, 17), metavar="N",
                        help="associations asking for series at once (default 4; one more asks for studies)")
    survey.add_argument("--top", type=int, default=5, help="StudyDescriptions shown per group (default 5)")
    survey.add_argument("--json", action="store_true", help="machine output (JSON) on stdout")
    survey.set_defaults(handler=cmd_routing_survey)
