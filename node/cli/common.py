"""What every ``qoq-node`` command shares: its configuration, the node's state database, timestamps,
and the ``--config`` option."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from node.config import ConfigError, NodeConfig, load_config, require_usable
from node.store import Store

#: A command: its parsed arguments in, the process's exit status out.
Handler = Callable[[argparse.Namespace], int]
#: What ``ArgumentParser.add_subparsers`` returns.
Commands = argparse._SubParsersAction  # the type argparse gives no public name


def load(args: argparse.Namespace) -> NodeConfig:
    """The configuration ``--config`` names (built-in defaults without it)."""
    return load_config(args.config)


def load_usable(args: argparse.Namespace) -> NodeConfig:
    """The configuration, refused when a file or variable it names is missing (commands that run it)."""
    return require_usable(load(args))


def iso(timestamp: float) -> str:
    """A Unix time as an ISO 8601 UTC timestamp, to the second."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


@contextmanager
def opened_store(args: argparse.Namespace) -> Iterator[Store]:
    """The configured node's state database, closed on leaving. A database that is not there is an error,
    never made anew: an empty one would list nothing and look like a node that has nothing."""
    from node.app import STATE_DB_NAME, open_store

    config = load(args)
    if not (config.storage.root / STATE_DB_NAME).is_file():
        raise ConfigError(f"no state database at {config.storage.root / STATE_DB_NAME} (storage.root): is this the "
                          "node's configuration, and has the node run?")
    store = open_store(config)
    try:
        yield store
    finally:
        store.close()


def add_command(subparsers: Commands, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    """A sub-command that takes ``--config`` and runs ``handler``."""
    sub: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=help_text)
    sub.add_argument("--config", type=Path, default=None, help="node.yaml (default: built-in defaults)")
    sub.set_defaults(handler=handler)
    return sub
