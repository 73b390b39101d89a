"""The ``qoq-node`` command."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from node import __version__
from node.config import ConfigError, NodeConfig, load_config, require_usable
from node.engine.errors import EngineLoadError
from node.engine.replay import ReplayError
from node.errors import NodeError
from node.model.profiles import FAMILIES
from node.ops.logging import configure_logging
from node.routing import RoutingError
from node.store import QuarantinedObject, Store


def _load(args: argparse.Namespace) -> NodeConfig:
    return load_config(args.config)


def _load_usable(args: argparse.Namespace) -> NodeConfig:
    """The configuration, refused when a file or variable it names is missing (commands that run it)."""
    return require_usable(_load(args))


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration (the files and variables it names, the routing rules) and say what it
    resolves to."""
    from node.routing import Router

    config = _load_usable(args)
    Router.from_file(config.routing.rules)
    print(f"configuration OK: AE {config.dicom.ae_title} on {config.dicom.host}:{config.dicom.port}, "
          f"storage {config.storage.root}, metrics on {config.http.host}:{config.http.port}")
    print(_model_status(config))
    if config.engine.backend == "openai":
        print(_engine_server_status(config))
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


def _engine_server_status(config: NodeConfig) -> str:
    """Whether the openai backend's server answers and serves the configured model (it need not be
    up for the node to start: studies wait for it)."""
    from node.engine.factory import make_engine
    from node.engine.openai_backend import ServerError

    once = config.engine.openai.model_copy(update={"retries": 0})
    engine = make_engine(config.engine.model_copy(update={"openai": once}))  # refuses a server serving another model
    try:
        engine.served_models()
    except ServerError as exc:
        return f"engine server NOT reachable now ({exc}); the node will start and studies will wait for it"
    return f"engine server OK: {config.engine.openai.url} serves '{config.engine.openai.served_model}'"


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM or SIGINT, then drain and stop."""
    from node.app import Node

    config = _load(args)
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
    return 0


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


@contextmanager
def _opened_store(args: argparse.Namespace) -> Iterator[Store]:
    """The configured node's state database, closed on leaving. A database that is not there is an error,
    never made anew: an empty one would list nothing and look like a node that has nothing."""
    from node.app import STATE_DB_NAME, open_store

    config = _load(args)
    if not (config.storage.root / STATE_DB_NAME).is_file():
        raise ConfigError(f"no state database at {config.storage.root / STATE_DB_NAME} (storage.root): is this the "
                          "node's configuration, and has the node run?")
    store = open_store(config)
    try:
        yield store
    finally:
        store.close()


def cmd_studies(args: argparse.Namespace) -> int:
    """List studies with their state (UIDs and counts only, no patient identity), or read failed ones again."""
    if args.action == "retry":
        return _retry_failed_studies(args)
    with _opened_store(args) as store:
        studies = store.studies.summaries()
    if args.json:
        print(json.dumps([asdict(study) for study in studies], indent=2))
        return 0
    print(f"{'STUDY INSTANCE UID':<64}  {'VER':>3}  {'STATE':<11} {'INST':>5} {'SER':>4}  {'MOD':<8} "
          f"{'LAST RECEIVED':<25} {'TRIES':>5}  DETAIL")
    for s in studies:
        print(f"{s.study_uid:<64}  {s.version:>3}  {s.state:<11} {s.instances:>5} {s.series:>4}  "
              f"{s.modalities:<8} {_iso(s.last_received):<25} {s.attempts:>5}  {s.detail}")
    return 0


def _retry_failed_studies(args: argparse.Namespace) -> int:
    """Failed studies (named, or ``--failed``: every one) back to stable, to be read again at once."""
    import time

    if bool(args.uids) == args.failed:
        print("qoq-node: studies retry takes study UIDs or --failed (not both)", file=sys.stderr)
        return 1
    with _opened_store(args) as store:
        moved = store.studies.retry_failed(time.time(), args.uids or None)
    for uid in args.uids:
        if uid not in moved:
            print(f"qoq-node: study {uid} is not failed: left as it is", file=sys.stderr)
    print(f"{len(moved)} failed study(ies) will be read again")
    return 0 if moved else 1


def _refusal_detail(quarantined: QuarantinedObject) -> str:
    """The refusal's detail from the object's JSON note ('' when the note is gone)."""
    try:
        return str(json.loads(Path(quarantined.path).with_suffix(".json").read_text()).get("detail", ""))
    except (OSError, ValueError):
        return ""


def cmd_quarantine(args: argparse.Namespace) -> int:
    """List the objects the node refused and kept aside, with why and who sent them."""
    with _opened_store(args) as store:
        kept = [{**asdict(q), "detail": _refusal_detail(q)} for q in store.quarantine.items()]
    if args.json:
        print(json.dumps(kept, indent=2))
        return 0
    print(f"{'RECEIVED':<25} {'REASON':<22} {'CALLING AE':<16} {'FILE':<40} DETAIL")
    for q in kept:
        print(f"{_iso(q['received_at']):<25} {q['reason']:<22} {q['calling_ae']:<16} {Path(q['path']).name:<40} "
              f"{q['detail']}")
    return 0


def cmd_context(args: argparse.Namespace) -> int:
    """Show what the node keeps of a patient's context, or what would go with a study (on the terminal only)."""
    from node.context.overview import describe_patient, describe_study

    config = _load(args)
    with _opened_store(args) as store:
        lines = describe_study(store, config, args.study) if args.study else describe_patient(store, args.patient)
    print("\n".join(lines))
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    """Run the node's chain (route → gather → image → read → results) on DICOM files, offline."""
    from node.offline import run_infer

    config = _load_usable(args)
    configure_logging(config.log.level, config.log.format)
    return run_infer(config, args.paths, args.context, args.json, args.out)


def cmd_outbox(args: argparse.Namespace) -> int:
    """List the outbox, or make failed/waiting items due now."""
    import time

    with _opened_store(args) as store:
        if args.action == "list":
            items = store.outbox.items(args.state)
            if args.json:
                print(json.dumps([asdict(item) for item in items], indent=2))
            else:
                print(f"{'ID':>6}  {'DESTINATION':<16} {'KIND':<5} {'STATE':<8} {'TRIES':>5}  "
                      f"{'NEXT ATTEMPT':<25} LAST ERROR")
                for item in items:
                    print(f"{item.id:>6}  {item.destination:<16} {item.kind:<5} {item.state:<8} {item.attempts:>5}  "
                          f"{_iso(item.next_attempt_at):<25} {item.last_error}")
        else:
            if args.action == "retry" and args.id is None:
                print("qoq-node: outbox retry needs an ID (or use retry-all)", file=sys.stderr)
                return 1
            count = store.outbox.retry(time.time(), args.id if args.action == "retry" else None)
            print(f"{count} outbox item(s) due now")
            if args.action == "retry" and count == 0:
                return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the whole loop on loopback: PACS → node → PACS and EHR, and say where everything landed."""
    from node.demo import run_demo

    return run_demo(args.workdir, keep_running=args.keep_running)


def cmd_model_tiny(args: argparse.Namespace) -> int:
    """Build a tiny random test checkpoint of a QoQ-Med family (offline)."""
    from node.engine.tiny import build_tiny_checkpoint

    directory = build_tiny_checkpoint(args.directory, family=args.family, seed=args.seed)
    print(f"tiny {args.family} test checkpoint (random weights, not a clinical model) written to {directory}")
    return 0


def cmd_engine_serve(args: argparse.Namespace) -> int:
    """Serve the configured engine over an OpenAI-compatible API until SIGTERM or SIGINT."""
    from node.engine.openai_server import EngineServer
    from node.engine_host import build_engine

    config = _load_usable(args)
    configure_logging(config.log.level, config.log.format)
    if config.engine.backend == "openai":
        raise EngineLoadError("engine serve runs a local engine: set engine.backend to transformers, "
                              "tensorrt-llm or replay")
    engine = build_engine(config, test_model_when_unset=True).engine
    server = EngineServer(args.host, args.port, engine, args.served_model, args.max_batch)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"serving {engine.model_identity} as '{args.served_model}' on http://{args.host}:{server.port}/v1",
          flush=True)
    server.serve_forever()
    server.server_close()
    return 0


def cmd_engine_prepare(args: argparse.Namespace) -> int:
    """Do the configured backend's one-off preparation (FP8 quantization for tensorrt-llm)."""
    from node.engine.prepare import prepare

    config = _load(args)
    configure_logging(config.log.level, config.log.format)
    print(prepare(config.engine))
    return 0


def _add_command(subparsers, name: str, handler, help_text: str) -> argparse.ArgumentParser:
    """A sub-command that takes ``--config`` and runs ``handler``."""
    sub = subparsers.add_parser(name, help=help_text, description=help_text)
    sub.add_argument("--config", type=Path, default=None, help="node.yaml (default: built-in defaults)")
    sub.set_defaults(handler=handler)
    return sub


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qoq-node``."""
    parser = argparse.ArgumentParser(prog="qoq-node", description="QoQ-Med AI node between PACS and EHR.")
    parser.add_argument("--version", action="version", version=f"qoq-node {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = _add_command(commands, "serve", cmd_serve, "Run the node until SIGTERM.")
    serve.add_argument("--drain-seconds", type=float, default=30.0,
                       help="on SIGTERM, how long open associations may take to finish (default 30)")
    _add_command(commands, "check", cmd_check, "Validate the configuration; exit 1 with the reason if it is bad.")
    studies = _add_command(commands, "studies", cmd_studies,
                           "List received studies and their state, or read failed studies again (retry).")
    studies.add_argument("action", nargs="?", choices=["list", "retry"], default="list")
    studies.add_argument("uids", nargs="*", help="the failed studies to read again (retry)")
    studies.add_argument("--failed", action="store_true", help="retry every failed study")
    studies.add_argument("--json", action="store_true", help="machine-readable output (list)")
    quarantine = _add_command(commands, "quarantine", cmd_quarantine,
                              "List the objects refused on C-STORE and kept aside, with the reason.")
    quarantine.add_argument("--json", action="store_true", help="machine-readable output")
    infer_parser = _add_command(commands, "infer", cmd_infer,
                                "Run the model on DICOM files or folders, offline, and print findings.")
    infer_parser.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders (grouped by study)")
    infer_parser.add_argument("--json", action="store_true", help="machine-readable output, with geometry")
    infer_parser.add_argument("--out", type=Path, default=None,
                              help="also write each study's SR, SEGs, presentation state (and SCs) and HL7 ORU^R01 "
                                   "into OUT/<study UID>/")
    infer_parser.add_argument("--context", type=Path, default=None,
                              help="a file of HL7 messages (orders ORM/OMI, lab results ORU): the patients' context, "
                                   "given as each study's routing task asks")
    context = _add_command(commands, "context", cmd_context,
                           "Show the clinical context kept for a patient, or what would go with a study.")
    which = context.add_mutually_exclusive_group(required=True)
    which.add_argument("patient", nargs="?", help="the patient's key (as 'qoq-node context --study' shows it)")
    which.add_argument("--study", help="a Study Instance UID the node holds")
    outbox = _add_command(commands, "outbox", cmd_outbox, "List deliveries to PACS and EHR, or retry failed ones.")
    outbox.add_argument("action", choices=["list", "retry", "retry-all"])
    outbox.add_argument("id", nargs="?", type=int, help="the item to retry (retry)")
    outbox.add_argument("--state", choices=["pending", "sent", "dead"], help="list only items in this state")
    outbox.add_argument("--json", action="store_true", help="machine-readable output (list)")
    demo = commands.add_parser(
        "demo", help="Send sample studies through a loopback PACS, the node and an EHR listener, and show the results.",
        description="Starts Orthanc (if installed, else a built-in storage SCP) as the PACS, an MLLP listener as the "
        "EHR and a node with the replay engine; sends a chest CR and a CT study and prints where every result landed.")
    demo.add_argument("--workdir", type=Path, default=Path("var/demo"), help="where everything is kept (var/demo)")
    demo.add_argument("--keep-running", action="store_true", help="keep the PACS and node up until Ctrl-C")
    demo.set_defaults(handler=cmd_demo)
    engine = commands.add_parser("engine", help="Engine utilities: serve it to other nodes, prepare it ahead of start.",
                                 description="Engine utilities.")
    engine_commands = engine.add_subparsers(dest="engine_command", required=True)

    engine_serve = _add_command(engine_commands, "serve", cmd_engine_serve,
                                "Serve the configured engine (transformers, tensorrt-llm or replay) over an "
                                "OpenAI-compatible chat-completions API.")
    engine_serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    engine_serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    engine_serve.add_argument("--served-model", default="qoq-med", help="the model name clients ask for (qoq-med)")
    engine_serve.add_argument("--max-batch", type=int, default=8, help="requests run together at most (8)")
    _add_command(engine_commands, "prepare", cmd_engine_prepare,
                 "One-off work before the node starts: the FP8 checkpoint for tensorrt-llm with quantization fp8, "
                 "cached next to the model.")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qoq-node`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, RoutingError, ReplayError, EngineLoadError) as exc:
        print(f"qoq-node: configuration error: {exc}", file=sys.stderr)
        return 1
