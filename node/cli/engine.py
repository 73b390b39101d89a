"""``qoq-node engine serve|prepare`` and ``qoq-node model tiny``: the engine served to other nodes,
prepared ahead of start, and a tiny random test checkpoint."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from node.cli.common import Commands, add_command, load, load_usable
from node.engine.errors import EngineLoadError
from node.model.profiles import FAMILIES
from node.ops.logging import configure_logging


def cmd_engine_serve(args: argparse.Namespace) -> int:
    """Serve the configured engine over an OpenAI-compatible API until SIGTERM or SIGINT."""
    from node.engine.openai_server import EngineServer
    from node.engine_host import build_engine

    config = load_usable(args)
    configure_logging(config.log.level, config.log.format)
    if config.engine.backend == "openai":
        raise EngineLoadError("engine serve runs a local engine: set engine.backend to transformers, "
                              "tensorrt-llm or replay")
    engine = build_engine(config, test_model_when_unset=True).engine
    server = EngineServer(args.host, args.port, engine, args.served_model, args.max_batch,
                          body_idle_seconds=config.http.body_idle_seconds)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server.start()
    print(f"serving {engine.model_identity} as '{args.served_model}' on http://{args.host}:{server.port}/v1",
          flush=True)
    stopping.wait()
    server.stop()
    return 0


def cmd_engine_prepare(args: argparse.Namespace) -> int:
    """Do the configured backend's one-off preparation (FP8 quantization for tensorrt-llm)."""
    from node.engine.prepare import prepare
    from node.testing.synthetic import calibration_study

    config = load(args)
    configure_logging(config.log.level, config.log.format)
    print(prepare(config.engine, calibration_study))
    return 0


def cmd_model_tiny(args: argparse.Namespace) -> int:
    """Build a tiny random test checkpoint of a QoQ-Med family (offline)."""
    from node.engine.tiny import build_tiny_checkpoint

    directory = build_tiny_checkpoint(args.directory, family=args.family, seed=args.seed)
    print(f"tiny {args.family} test checkpoint (random weights, not a clinical model) written to {directory}")
    return 0


def add_engine(commands: Commands) -> None:
    """``qoq-node engine serve|prepare``."""
    engine = commands.add_parser("engine", help="Engine utilities: serve it to other nodes, prepare it ahead of start.",
                                 description="Engine utilities.")
    engine_commands = engine.add_subparsers(dest="engine_command", required=True)
    engine_serve = add_command(engine_commands, "serve", cmd_engine_serve,
                               "Serve the configured engine (transformers, tensorrt-llm or replay) over an "
                               "OpenAI-compatible chat-completions API.")
    engine_serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    engine_serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    engine_serve.add_argument("--served-model", default="qoq-med", help="the model name clients ask for (qoq-med)")
    engine_serve.add_argument("--max-batch", type=int, default=8, help="requests run together at most (8)")
    add_command(engine_commands, "prepare", cmd_engine_prepare,
                "One-off work before the node starts: the FP8 checkpoint for tensorrt-llm with quantization fp8, "
                "cached next to the model.")


def add_model(commands: Commands) -> None:
    """``qoq-node model tiny DIRECTORY``."""
    model = commands.add_parser("model", help="Model utilities.", description="Model utilities.")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    tiny = model_commands.add_parser(
        "tiny", help="Write a tiny random checkpoint of a QoQ-Med family for tests and demos (offline, a few MB)."
    )
    tiny.add_argument("directory", type=Path)
    tiny.add_argument("--seed", type=int, default=0, help="same seed and library versions: same bytes")
    tiny.add_argument("--family", choices=FAMILIES, default="qwen2.5-vl",
                      help="qwen2.5-vl (QoQ-Med-VL-7B/32B), qwen3-vl (QoQ-Med3-VL-8B) or omni (QoQ-Med-Omni-7B, "
                      "with its own modelling code and an ECG input)")
    tiny.set_defaults(handler=cmd_model_tiny)
