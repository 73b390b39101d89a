"""``qoq-node evaluate DIR --labels FILE.csv [--out REPORT_DIR]``: local validation on the hospital's own
labelled studies, through the node's own path."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from node.cli.common import Commands, add_command, load_usable
from node.errors import TransientError, reason
from node.ops.logging import configure_logging


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Check the labels against the folder, read its labelled studies and write report.json and report.html."""
    try:
        from node.evaluation.html import render_html
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib":
            raise
        print("qoq-node: evaluate draws its report with matplotlib: pip install 'qoq-node[evaluate]'", file=sys.stderr)
        return 1
    from node.evaluation.references import LabelsError
    from node.evaluation.report import build_report
    from node.evaluation.run import evaluate

    config = load_usable(args)
    configure_logging(config.log.level, config.log.format)
    try:
        run = evaluate(config, args.folder, args.labels, args.out, args.context)
    except LabelsError as exc:
        print(f"qoq-node: {exc}; nothing was run", file=sys.stderr)
        return 2
    except TransientError as exc:  # the engine went away: what it answered is kept, a new run goes on from there
        print(f"qoq-node: {reason(exc)}; the answers so far are kept in {args.out / 'answers'}: run again to go on",
              file=sys.stderr)
        return 1
    report = build_report(run)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "report.html").write_text(render_html(report), encoding="utf-8")
    print(f"wrote {args.out / 'report.json'} and {args.out / 'report.html'} "
          f"({run.engine_calls} studies asked of the engine, the others from kept answers)", file=sys.stderr)
    return 0


def add_evaluate(commands: Commands) -> None:
    """``qoq-node evaluate DIR --labels FILE.csv [--out REPORT_DIR]``."""
    parser = add_command(commands, "evaluate", cmd_evaluate,
                         "Local validation: read labelled studies through the node and score the answers.")
    parser.add_argument("folder", type=Path, help="the studies: one folder per study, or files grouped by study UID")
    parser.add_argument("--labels", type=Path, required=True,
                        help="CSV with the columns study (Study Instance UID or accession), labels (separated by "
                             "';') and optionally boxes ('SOPInstanceUID[/FRAME]:x1,y1,x2,y2' in source pixels, "
                             "separated by ';')")
    parser.add_argument("--out", type=Path, default=Path("evaluation"),
                        help="where report.json, report.html and the kept answers (answers/) go (./evaluation)")
    parser.add_argument("--context", type=Path, default=None,
                        help="a file of HL7 messages (orders, lab results): the patients' context, as infer takes it")
