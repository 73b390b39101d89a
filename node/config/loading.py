"""Reading the configuration: the YAML file, then ``QOQ_NODE__A__B`` environment overrides, then the models.

Environment variables named ``QOQ_NODE__SECTION__KEY`` override the file: the double underscore separates
levels and the value is read as YAML, so ``QOQ_NODE__DICOM__PORT=11113`` and
``QOQ_NODE__DICOM__ALLOWED_CALLING_AE_TITLES='[PACS1]'`` both work. Every error names where the bad value
came from — the file, or the variable that set it — and the key.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from node.config.base import ConfigError
from node.config.node_config import NodeConfig

ENV_PREFIX = "QOQ_NODE__"

#: Keys that moved (old dotted key → new): refused with a message naming the new key, never ignored.
RENAMED_KEYS: dict[str, str] = {
    "engine.url": "engine.openai.url",
    "engine.served_model": "engine.openai.served_model",
    "engine.api_key_env": "engine.openai.api_key_env",
    "engine.timeout_s": "engine.openai.timeout_seconds",
    "engine.max_concurrency": "engine.openai.max_concurrency",
    "engine.retries": "engine.openai.retries",
    "feedback.tokens": "feedback.tokens_file",
}


@dataclass(frozen=True)
class _Override:
    """One ``QOQ_NODE__…`` variable: its name, the key path it sets and the value it sets it to."""

    variable: str
    keys: tuple[str, ...]
    value: Any


def _overrides(environ: Mapping[str, str]) -> list[_Override]:
    """The environment's overrides, in the order they apply (by name: a section before its keys)."""
    overrides = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__") if part)
        if not keys:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name} is not valid YAML: {exc}") from exc
        overrides.append(_Override(name, keys, value))
    return overrides


def _apply(data: dict[str, Any], override: _Override) -> None:
    """Set ``override``'s key in the nested mapping ``data``, making the mappings above it as needed."""
    node = data
    for key in override.keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[override.keys[-1]] = override.value


def _holds(value: Any, path: Sequence[str]) -> bool:
    """Whether the nested mapping ``value`` has the key ``path``."""
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


def _renamed(value: Any, at: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The (old, new) pairs of :data:`RENAMED_KEYS` that ``value``, set at key path ``at``, uses."""
    found = []
    for old, new in RENAMED_KEYS.items():
        path = tuple(old.split("."))
        if path[:len(at)] == at[:len(path)] and (len(at) >= len(path) or _holds(value, path[len(at):])):
            found.append((old, new))
    return found


def _renamed_problems(file_data: dict[str, Any], source: str, overrides: list[_Override]) -> list[str]:
    """One message per renamed key the file or a variable uses, naming the new key (and its variable)."""
    problems = [f"{source}: {old} was renamed {new}" for old, new in _renamed(file_data)]
    for override in overrides:
        for old, new in _renamed(override.value, override.keys):
            variable = ENV_PREFIX + new.upper().replace(".", "__")
            problems.append(f"{override.variable}: {old} was renamed {new} ({variable})")
    return problems


def _blame(loc: tuple[str, ...], path: Path | None, overrides: list[_Override]) -> str:
    """Where the value at ``loc`` came from: the last variable that set it (or a mapping above it); else the
    variables that set keys under it, with the file; else the file."""
    setting = [o.variable for o in overrides if o.keys == loc[:len(o.keys)]]
    if setting:
        return setting[-1]
    below = [o.variable for o in overrides if o.keys[:len(loc)] == loc]
    sources = ([str(path)] if path is not None else []) + below
    return " with ".join(sources) or "configuration"


def _describe(error: ValidationError, path: Path | None, overrides: list[_Override]) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{_blame(loc, path, overrides)}: {'.'.join(loc) or '(top level)'}: {message}")
    return "; ".join(lines)


def _kinds(annotation: Any) -> tuple[Any, ...]:
    """The types an annotation admits (``Path | None`` → Path, NoneType; ``list[X]`` → X)."""
    return typing.get_args(annotation) or (annotation,)


def _anchor_paths(data: Any, model: type[BaseModel], base: Path) -> None:
    """Make the relative paths in ``data`` (a mapping for ``model``, as read from a file) relative to ``base``."""
    if not isinstance(data, dict):
        return
    for name, field in model.model_fields.items():
        value = data.get(name)
        if value is None:
            continue
        kinds = _kinds(field.annotation)
        if Path in kinds and isinstance(value, str) and value and not Path(value).is_absolute():
            data[name] = os.path.normpath(base / value)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                for item in value if isinstance(value, list) else [value]:
                    _anchor_paths(item, kind, base)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return loaded or {}


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Load and validate the configuration from ``path`` (or defaults) plus the environment. Relative
    paths in the file are relative to the file's folder; those of the environment and the defaults, to
    the working directory. Files the configuration names are not looked at here: see
    :func:`node.config.config_problems`.

    Raises ConfigError with a message naming, for each bad key, the file or variable it came from.
    """
    data = _read_file(path) if path is not None else {}
    overrides = _overrides(os.environ if environ is None else environ)
    renamed = _renamed_problems(data, str(path), overrides)
    if renamed:
        raise ConfigError("; ".join(renamed))
    if path is not None:
        _anchor_paths(data, NodeConfig, Path(path).resolve().parent)
    for override in overrides:
        _apply(data, override)
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, overrides)) from exc
