"""What the configuration names outside itself — files, environment variables, tokens secrets — and whether it
is there (a tokens secret: and valid, as :mod:`node.ops.tokens` reads it).

The models never read the disk or the environment: a configuration loads wherever it is read (``qoq-node
studies`` on another host, a test), and :func:`config_problems` says what is missing where it matters:
``qoq-node check``, the node's start, and the commands that run an engine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from node.config.base import ConfigError
from node.config.dicomweb import CLIENT_NAME
from node.config.node_config import NodeConfig
from node.ops.tokens import TokensError, read_tokens


def _unreadable(where: str, files: Mapping[str, Path | None]) -> list[str]:
    return [f"{where}: {name} {path} is not a readable file"
            for name, path in files.items() if path is not None and not path.is_file()]


def _bad_tokens(config: NodeConfig) -> list[str]:
    """What is wrong with each tokens secret the configuration names (the feedback API's, the STOW-RS
    receiver's when it is on), as their servers would find it at start; the messages quote no token."""
    stow = config.dicomweb.stow
    secrets = {"feedback.tokens_file": (config.feedback.tokens_file, None),
               "dicomweb.stow.tokens_file": (stow.tokens_file if stow.enabled else None, CLIENT_NAME.validate_python)}
    problems = []
    for key, (path, check_name) in secrets.items():
        if path is None:
            continue
        try:
            read_tokens(path, key, check_name)
        except TokensError as exc:
            problems.append(str(exc))
    return problems


def config_problems(config: NodeConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """Each file the configuration names that is not there, each tokens secret that cannot be read or is not
    valid, and each environment variable it names that is not set (``environ``, default the process's), one
    message per problem naming its key; empty when none."""
    environ = os.environ if environ is None else environ
    problems = []
    tls = config.dicom.tls
    if tls.enabled:
        problems += _unreadable("dicom.tls", {"certificate": tls.certificate, "private_key": tls.private_key,
                                              "ca": tls.ca})
    for index, destination in enumerate(config.destinations.dicom):
        client = destination.tls
        if client.enabled:
            problems += _unreadable(f"destinations.dicom.{index}.tls", {
                "ca": client.ca, "certificate": client.certificate, "private_key": client.private_key})
    problems += _unreadable("quality", {"baseline": config.quality.baseline})
    problems += _bad_tokens(config)
    for index, web in enumerate(config.destinations.dicomweb):
        problems += _unreadable(f"destinations.dicomweb.{index}", {"ca": web.ca})
        problems += _unreadable(f"destinations.dicomweb.{index}.auth", web.auth.files())
    engine = config.engine
    problems += _unreadable("engine", {"replay_responses": engine.replay_responses})
    key_env = engine.openai.api_key_env
    if engine.backend == "openai" and key_env is not None and key_env not in environ:
        problems.append(f"engine.openai: api_key_env names {key_env}, which is not set in the environment")
    stow = config.dicomweb.stow
    if stow.enabled and stow.tls.enabled:
        problems += _unreadable("dicomweb.stow.tls", {"certificate": stow.tls.certificate,
                                                      "private_key": stow.tls.private_key, "ca": stow.tls.ca})
    return problems


def require_usable(config: NodeConfig, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """``config`` when :func:`config_problems` finds nothing; else ConfigError naming every problem."""
    problems = config_problems(config, environ)
    if problems:
        raise ConfigError("; ".join(problems))
    return config
