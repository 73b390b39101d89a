"""The ``qoq-node`` command."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from node import __version__
from node.config import ConfigError, NodeConfig, load_config
from node.ops.logging import configure_logging


def _load(args: argparse.Namespace) -> NodeConfig:
    return load_config(args.config)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration and say what it resolves to."""
    config = _load(args)
    print(f"configuration OK: AE {config.dicom.ae_title} on {config.dicom.host}:{config.dicom.port}, "
          f"storage {config.storage.root}, metrics on {config.http.host}:{config.http.port}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM or SIGINT, then drain and stop."""
    from node.app import Node

    config = _load(args)
    configure_logging(config.log.level, config.log.format)
    node = Node(config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        node.start()
    except OSError as exc:
        print(f"qoq-node: cannot start: {exc}", file=sys.stderr)
        node.stop(drain_seconds=0)
        return 1
    stop.wait()
    node.stop(drain_seconds=args.drain_seconds)
    return 0


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def cmd_studies(args: argparse.Namespace) -> int:
    """List studies with their state (UIDs and counts only, no patient identity)."""
    from node.app import open_store

    config = _load(args)
    store = open_store(config)
    try:
        studies = store.studies()
    finally:
        store.close()
    if args.json:
        print(json.dumps([asdict(study) for study in studies], indent=2))
        return 0
    print(f"{'STUDY INSTANCE UID':<64}  {'VER':>3}  {'STATE':<10} {'INST':>5} {'SER':>4}  {'MOD':<8} "
          f"{'FIRST RECEIVED':<25} LAST RECEIVED")
    for s in studies:
        print(f"{s.study_uid:<64}  {s.version:>3}  {s.state:<10} {s.instances:>5} {s.series:>4}  "
              f"{s.modalities:<8} {_iso(s.first_received):<25} {_iso(s.last_received)}")
    return 0


def cmd_model_tiny(args: argparse.Namespace) -> int:
    """Build the tiny random test checkpoint (offline)."""
    from node.engine.tiny import build_tiny_checkpoint

    directory = build_tiny_checkpoint(args.directory, seed=args.seed)
    print(f"tiny test checkpoint (random weights, not a clinical model) written to {directory}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qoq-node``."""
    parser = argparse.ArgumentParser(prog="qoq-node", description="QoQ-Med AI node between PACS and EHR.")
    parser.add_argument("--version", action="version", version=f"qoq-node {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", type=Path, default=None, help="node.yaml (default: built-in defaults)")
        sub.set_defaults(handler=handler)
        return sub

    serve = command("serve", cmd_serve, "Run the node until SIGTERM.")
    serve.add_argument("--drain-seconds", type=float, default=30.0,
                       help="on SIGTERM, how long open associations may take to finish (default 30)")
    command("check", cmd_check, "Validate the configuration; exit 1 with the reason if it is bad.")
    studies = command("studies", cmd_studies, "List received studies and their state.")
    studies.add_argument("--json", action="store_true", help="machine-readable output")
    model = commands.add_parser("model", help="Model utilities.", description="Model utilities.")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    tiny = model_commands.add_parser(
        "tiny", help="Write a tiny random Qwen2.5-VL checkpoint for tests and demos (offline, a few MB)."
    )
    tiny.add_argument("directory", type=Path)
    tiny.add_argument("--seed", type=int, default=0, help="same seed and library versions: same bytes")
    tiny.set_defaults(handler=cmd_model_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qoq-node`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"qoq-node: configuration error: {exc}", file=sys.stderr)
        return 1
