"""``qoq-node routing explain FILES | --study UID``: where routing sends each study and why.

For each study it prints what routing read (to the operator, who may see descriptions: they never go to
the log), the rule or procedure code that chose its task, or for each task the first condition its
nearest rule failed, and the exact question and the context policy that would go with the study.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from node.config import NodeConfig, load_config
from node.model.prompt import build_prompt
from node.routing import ContextPolicy, Explanation, Router, StudyHeader, study_routing
from node.routing.conditions import summary
from node.survey.command import add_survey


def _header_lines(header: StudyHeader) -> list[str]:
    age = "unknown" if header.age_years is None else f"{header.age_years:.0f} years"
    return [
        f"  modality {header.modality or '-'}, body part {header.body_part or '-'}, "
        f"view {header.view_position or '-'}, contrast {'yes' if header.contrast else 'no'}, age {age}",
        f"  study description: {header.study_description or '-'}",
        f"  requested procedure: {header.procedure_description or '-'}",
        f"  series description: {header.series_description or '-'}",
        f"  procedure codes: {', '.join(header.procedure_codes) or '-'}; "
        f"anatomic region: {', '.join(header.anatomic_regions) or '-'}",
    ]


def policy_text(policy: ContextPolicy) -> str:
    """A task's context policy in one line ("none" when it gathers nothing)."""
    parts = ["the order's reason and clinical information"] if policy.order else []
    if policy.labs:
        parts.append(f"labs {', '.join(policy.labs.loinc)} within {policy.labs.hours:g} h before")
    if policy.priors:
        parts.append(f"{policy.priors.count} prior(s) of {', '.join(policy.priors.modality)} "
                     f"within {policy.priors.days:g} days")
    if policy.ecg:
        parts.append(f"an ECG within {policy.ecg.hours:g} h (models that take the signal)")
    return "; ".join(parts) or "none"


def explanation_lines(router: Router, header: StudyHeader, explanation: Explanation) -> list[str]:
    """What ``routing explain`` says of one study after its header: the choice or the misses, the question
    and the context policy."""
    task = explanation.task
    if task is None:
        lines = [f"  skipped: {explanation.reason(header)}", "  each task's nearest rule, and the first condition "
                 "it failed:"]
        lines += [f"    {miss.task}: rule {miss.rule}: {miss.failed}" for miss in explanation.misses]
        return [*lines, "  question: none (not read)", "  context: none"]
    chosen = explanation.chosen_by
    if chosen.startswith("rule "):
        chosen += f" ({summary(router.rules.rules[int(chosen.split()[1]) - 1].match)})"
    question = build_prompt(task.spec.prompt_question, 0)
    return [f"  task {task.name} (domain {task.domain}), by {chosen}",
            f"  population: {task.spec.population or '-'}",
            "  question:", *(f"    {line}" for line in question.splitlines()),
            f"  context: {policy_text(task.spec.context)}"]


def explain_study(router: Router, study_uid: str, files: Sequence[Path]) -> str:
    """The whole explanation of one study."""
    header, explanation = study_routing(files, router)
    return "\n".join([f"study {study_uid} ({len(files)} file(s))", *_header_lines(header),
                      *explanation_lines(router, header, explanation)])


@contextmanager
def _studies(config: NodeConfig, args: argparse.Namespace) -> Iterator[tuple[Router, dict[str, list[Path]]]]:
    """The router and the studies the arguments name: files grouped by study, or a study the node holds
    (routed with the HL7 orders of the node's store, open while in use)."""
    from node.app import build_router, open_store
    from node.offline import group_by_study

    if args.study is None:
        studies, problems = group_by_study(args.paths)
        for problem in problems:
            print(f"qoq-node: {problem}", file=sys.stderr)
        yield build_router(config), studies
        return
    store = open_store(config)
    try:
        yield build_router(config, store), {args.study: store.instances.study_files(args.study)}
    finally:
        store.close()


def cmd_routing_explain(args: argparse.Namespace) -> int:
    """Print where routing sends each study and why; 1 when there was no study to explain."""
    if bool(args.paths) == bool(args.study):
        print("qoq-node: routing explain takes FILES or --study UID (one of them)", file=sys.stderr)
        return 2
    with _studies(load_config(args.config), args) as (router, studies):
        if not any(studies.values()):
            print("qoq-node: no study to explain" + (f": the node holds no study {args.study}" if args.study else ""),
                  file=sys.stderr)
            return 1
        print("\n\n".join(explain_study(router, uid, files) for uid, files in studies.items() if files))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``routing`` command group (``explain``, ``survey``) to ``qoq-node``'s sub-commands."""
    routing = commands.add_parser("routing", help="Routing: where studies go and why.", description="Routing.")
    routing_commands = routing.add_subparsers(dest="routing_command", required=True)
    text = ("Print the rule that routes each study, or each task's first failed condition, with the exact question "
            "and the context policy that would go with it.")
    explain = routing_commands.add_parser("explain", help=text, description=text)
    explain.add_argument("--config", type=Path, default=None, help="node.yaml (default: built-in defaults)")
    explain.add_argument("paths", nargs="*", type=Path, help="DICOM files or folders (grouped by study)")
    explain.add_argument("--study", help="a Study Instance UID the node holds (routed with its HL7 order)")
    explain.set_defaults(handler=cmd_routing_explain)
    add_survey(routing_commands)
