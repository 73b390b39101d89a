"""``qoq-node infer``, ``context`` and ``demo``: the node's chain on files, what it keeps of a patient,
and the whole loop on loopback."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.common import Commands, add_command, load, load_usable, opened_store
from node.ops.logging import configure_logging


def cmd_context(args: argparse.Namespace) -> int:
    """Show what the node keeps of a patient's context, or what would go with a study (on the terminal only)."""
    from node.context.overview import describe_patient, describe_study

    config = load(args)
    with opened_store(args) as store:
        lines = describe_study(store, config, args.study) if args.study else describe_patient(store, args.patient)
    print("\n".join(lines))
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    """Run the node's chain (route → gather → image → read → results) on DICOM files, offline."""
    from node.offline import run_infer

    config = load_usable(args)
    configure_logging(config.log.level, config.log.format)
    return run_infer(config, args.paths, args.context, args.json, args.out)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the whole loop on loopback: PACS → node → PACS and EHR, and say where everything landed."""
    from node.demo import run_demo

    return run_demo(args.workdir, keep_running=args.keep_running)


def add_infer(commands: Commands) -> None:
    """``qoq-node infer PATH…``."""
    infer_parser = add_command(commands, "infer", cmd_infer,
                               "Run the model on DICOM files or folders, offline, and print findings.")
    infer_parser.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders (grouped by study)")
    infer_parser.add_argument("--json", action="store_true", help="machine-readable output, with geometry")
    infer_parser.add_argument("--out", type=Path, default=None,
                              help="also write each study's SR, SEGs, presentation state (and SCs, PDF report) and "
                                   "HL7 ORU^R01 into OUT/<study UID>/")
    infer_parser.add_argument("--context", type=Path, default=None,
                              help="a file of HL7 messages (orders ORM/OMI, lab results ORU): the patients' context, "
                                   "given as each study's routing task asks")


def add_context(commands: Commands) -> None:
    """``qoq-node context PATIENT|--study UID``."""
    context = add_command(commands, "context", cmd_context,
                          "Show the clinical context kept for a patient, or what would go with a study.")
    which = context.add_mutually_exclusive_group(required=True)
    which.add_argument("patient", nargs="?", help="the patient's key (as 'qoq-node context --study' shows it)")
    which.add_argument("--study", help="a Study Instance UID the node holds")


def add_demo(commands: Commands) -> None:
    """``qoq-node demo``."""
    demo = commands.add_parser(
        "demo", help="Send sample studies through a loopback PACS, the node and an EHR listener, and show the results.",
        description="Starts Orthanc (if installed, else a built-in storage SCP) as the PACS, an MLLP listener as the "
        "EHR and a node with the replay engine; sends a chest CR and a CT study and prints where every result landed.")
    demo.add_argument("--workdir", type=Path, default=Path("var/demo"), help="where everything is kept (var/demo)")
    demo.add_argument("--keep-running", action="store_true", help="keep the PACS and node up until Ctrl-C")
    demo.set_defaults(handler=cmd_demo)
