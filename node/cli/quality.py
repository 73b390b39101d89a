"""``qoq-node quality``: per task, the studies read, verdicts, concordance with its 95 % interval, rejection rate
and drift beside the baseline; ``qoq-node feedback``: a reader's verdict from the shell. Labels, counts and figures
only — no identifier or text of a patient in what either prints."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from node.app import build_router
from node.cli.common import Commands, add_command, load, opened_store
from node.config.quality import QualityConfig
from node.feedback.submit import FeedbackRefused, closed_sets, parse, submit
from node.quality.baseline import load_evaluation
from node.quality.report import TaskQuality, since_quality, tasks
from node.store.verdicts import Judgement

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def since_seconds(text: str) -> float:
    """A duration such as ``30d``, ``12h``, ``90m`` or ``2w``, in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([mhdw])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30d, 12h, 90m or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print(quality: TaskQuality, config: QualityConfig) -> None:
    base, agreement = quality.baseline, quality.concordance
    interval = agreement["ci95"]
    print(f"{quality.task}  (baseline: {base.source}, {base.studies} studies)")
    print(f"  studies read     {quality.studies}")
    print(f"  verdicts         {', '.join(f'{k} {n}' for k, n in sorted(quality.verdicts.items())) or '-'}")
    print(f"  concordance      {_figure(agreement['value'])}"
          + (f" (95 % CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else "")
          + f" over {agreement['decided']} decided; baseline {_figure(base.concordance)}")
    print(f"  rejection rate   {_figure(quality.rejection_rate)}")
    print(f"  label drift PSI  {_figure(quality.psi)}")
    print(f"  input drift      {_figure(quality.input_drift)}")
    for flag in quality.flags(config):
        print(f"  ! {flag}")


def cmd_quality(args: argparse.Namespace) -> int:
    """Each task's quality since ``--since`` beside its baseline."""
    config = load(args)
    evaluation = load_evaluation(config.quality.baseline)
    since = time.time() - args.since
    with opened_store(args) as store:
        qualities = [since_quality(store, task, since, config.quality, evaluation) for task in tasks(store)]
    if args.json:
        print(json.dumps({"since": since, "tasks": [q.as_json(config.quality) for q in qualities]}, indent=2))
        return 0
    if not qualities:
        print("no answers or verdicts yet")
    for quality in qualities:
        _print(quality, config.quality)
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    """Keep a reader's verdict, checked as ``POST /v1/feedback`` checks it, written to the state database."""
    config = load(args)
    body = {field: getattr(args, field) for field in _BODY_FIELDS}
    try:
        with opened_store(args) as store:
            verdict = submit(store, closed_sets(build_router(config)), config.feedback,
                             parse({k: v for k, v in body.items() if v is not None}))
    except FeedbackRefused as exc:
        print(f"qoq-node: feedback refused: {exc.reason}", file=sys.stderr)
        return 1
    print(f"kept: {verdict.verdict} on the {verdict.task} result (version {verdict.version})")
    return 0


def add_quality(subparsers: Commands) -> None:
    """Register ``qoq-node quality``."""
    sub = add_command(subparsers, "quality", cmd_quality, "Per task: studies read, verdicts, concordance (95 % "
                      "Wilson interval), rejection rate and drift, beside the baseline.")
    sub.add_argument("--since", type=since_seconds, default=since_seconds("30d"), metavar="DURATION",
                     help="the window: 30d (default), 12h, 90m, 2w")
    sub.add_argument("--json", action="store_true", help="JSON instead of text")


#: The options of ``qoq-node feedback``, named as the fields of ``POST /v1/feedback``'s body.
_BODY_FIELDS = ("study_instance_uid", "accession", "verdict", "labels", "reader_role")


def add_feedback(subparsers: Commands) -> None:
    """Register ``qoq-node feedback``: its options are the API body's fields (``--study-instance-uid``,
    ``--accession``, ``--verdict``, ``--labels``, ``--reader-role``; ``--study``, ``--label`` and ``--role`` are
    kept as aliases)."""
    sub = add_command(subparsers, "feedback", cmd_feedback, "Keep a reader's verdict on the node's result for a "
                      "study (as POST /v1/feedback does).")
    which = sub.add_mutually_exclusive_group(required=True)
    which.add_argument("--study-instance-uid", "--study", dest="study_instance_uid", metavar="UID",
                       help="the Study Instance UID")
    which.add_argument("--accession", help="the Accession Number")
    sub.add_argument("--verdict", required=True, choices=tuple(Judgement))
    sub.add_argument("--labels", "--label", dest="labels", action="extend", nargs="+", default=[], metavar="LABEL",
                     help="with correct: the right labels (repeatable)")
    sub.add_argument("--reader-role", "--role", dest="reader_role", required=True,
                     help="the reader's role (feedback.reader_roles)")
