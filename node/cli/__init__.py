"""The ``qoq-node`` command: its parser and entry point. Each command group is a module of this package
(``running``: serve, check; ``records``: studies, quarantine, outbox; ``offline``: infer, context, demo;
``engine``: engine serve/prepare, model tiny; ``evaluate``: local validation;
``quality``: quality, feedback)."""

from __future__ import annotations

import argparse
import os
import sys

from node import __version__, routing_explain
from node.cli import engine, evaluate, offline, quality, records, running
from node.config import ConfigError
from node.engine.errors import EngineLoadError
from node.engine.replay import ReplayError
from node.routing import RoutingError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qoq-node``."""
    parser = argparse.ArgumentParser(prog="qoq-node", description="QoQ-Med AI node between PACS and EHR.")
    parser.add_argument("--version", action="version", version=f"qoq-node {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (running.add_serve, running.add_check, records.add_studies, records.add_quarantine, offline.add_infer,
                offline.add_context, records.add_outbox, offline.add_demo, engine.add_engine, engine.add_model,
                routing_explain.register, evaluate.add_evaluate, quality.add_quality, quality.add_feedback):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qoq-node`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, RoutingError, ReplayError, EngineLoadError) as exc:
        print(f"qoq-node: configuration error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `qoq-node outbox list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python flushes at exit
        return 141  # as a shell reports a command ended by SIGPIPE
