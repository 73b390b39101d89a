"""``qoq-node serve`` and ``qoq-node check``: run the node, or say whether its configuration would."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading

from node.cli.common import Commands, add_command, load, load_usable
from node.config import NodeConfig
from node.errors import NodeError
from node.ops.logging import configure_logging


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration (the files and variables it names, the routing rules) and say what it
    resolves to."""
    from node.engine.extras import require_backend_installed
    from node.routing import Router

    config = load_usable(args)
    Router.from_file(config.routing.rules)
    require_backend_installed(config.engine.backend)
    print(f"configuration OK: AE {config.dicom.ae_title} on {config.dicom.host}:{config.dicom.port}, "
          f"storage {config.storage.root}, metrics on {config.http.host}:{config.http.port}")
    print(_model_status(config))
    if config.engine.backend == "openai":
        reachable, status = _engine_server_status(config)
        print(status)
        if not reachable:
            return 1  # a check that passes must mean the node can read studies once started
    return 0


def _model_status(config: NodeConfig) -> str:
    """Which model family the node will run and what inputs it gives it."""
    from node.engine.factory import engine_profile

    engine = config.engine
    if engine.backend == "replay":
        where = f"replay backend (recorded responses, test only), inputs made for {engine.family}"
    elif engine.backend == "openai":
        where = f"openai backend, server {engine.openai.url} serving '{engine.openai.served_model}'"
    elif engine.model is None:
        where = "no model configured: the tiny random TEST model, built on first start"
    else:
        where = f"model {engine.model}"
    return f"{where}; {engine_profile(engine).describe()}"


def _engine_server_status(config: NodeConfig) -> tuple[bool, str]:
    """Whether the openai backend's server answers and serves the configured model, and what to say about it
    (it need not be up for the node to start: studies wait for it)."""
    from node.engine.factory import make_openai_engine
    from node.engine.openai_backend import ServerError

    once = config.engine.openai.model_copy(update={"retries": 0})
    # refuses a server serving another model
    engine = make_openai_engine(config.engine.model_copy(update={"openai": once}))
    try:
        engine.served_models()
    except ServerError as exc:
        return False, f"engine server NOT reachable now ({exc}); the node would start and studies would wait for it"
    return True, f"engine server OK: {config.engine.openai.url} serves '{config.engine.openai.served_model}'"


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM or SIGINT, then drain and stop."""
    from node.app import Node

    config = load(args)
    configure_logging(config.log.level, config.log.format)
    try:
        node = Node(config)
    except OSError as exc:  # e.g. the HTTP port is taken: the message names it
        print(f"qoq-node: cannot start: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        node.start()
    except (OSError, NodeError) as exc:  # a port taken, or a pynetdicom the node was not tested with
        print(f"qoq-node: cannot start: {exc}", file=sys.stderr)
        node.stop(drain_seconds=0)
        return 1
    stop.wait()
    node.stop(drain_seconds=args.drain_seconds)
    # The interpreter's last collection walks every object of a loaded model: seconds after node.stopped
    # (4.5-7 s with the tiny model on 2 cores). Nothing is left to free that the exit does not free anyway.
    gc.freeze()
    return 0


def add_serve(commands: Commands) -> None:
    """``qoq-node serve``."""
    serve = add_command(commands, "serve", cmd_serve, "Run the node until SIGTERM.")
    serve.add_argument("--drain-seconds", type=float, default=30.0,
                       help="on SIGTERM, how long open associations may take to finish (default 30)")


def add_check(commands: Commands) -> None:
    """``qoq-node check``."""
    add_command(commands, "check", cmd_check, "Validate the configuration; exit 1 with the reason if it is bad.")
