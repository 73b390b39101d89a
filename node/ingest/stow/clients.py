"""Who may store through STOW-RS: bearer tokens from a mounted secret, each with its client's name, and the
allow-list of client names (``dicomweb.stow.allowed_clients``), as AE titles are allow-listed for C-STORE."""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from node.config.base import AeTitle
from node.config.stow import StowConfig
from node.errors import DataError


class Unauthorized(DataError):
    """No bearer token, or one no client has (HTTP 401)."""


class Forbidden(DataError):
    """A known client that may not store (HTTP 403)."""


class TokensFileError(DataError):
    """``dicomweb.stow.tokens_file`` cannot be read as a list of clients; the message says why (no token in it)."""


class _Client(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: AeTitle
    token: str = Field(min_length=16, description="The bearer token (at least 16 characters).")


_CLIENTS = TypeAdapter(list[_Client])


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int]
    clients: tuple[_Client, ...]


def read_clients(path: Path) -> tuple[_Client, ...]:
    """The clients of a tokens file (YAML or JSON: a list of ``{name, token}``); TokensFileError naming what is
    wrong, never a token."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        clients = tuple(_CLIENTS.validate_python(raw or []))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TokensFileError(f"dicomweb.stow.tokens_file {path} cannot be read: {type(exc).__name__}") from None
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        raise TokensFileError(f"dicomweb.stow.tokens_file {path}: {where}") from None
    if len({client.token for client in clients}) != len(clients):
        raise TokensFileError(f"dicomweb.stow.tokens_file {path}: two clients share a token")
    return clients


class Clients:
    """The tokens file, read again when it changes (a rotated secret), and the allow-list."""

    def __init__(self, config: StowConfig) -> None:
        assert config.tokens_file is not None
        self._path = config.tokens_file
        self._allowed = frozenset(config.allowed_clients)
        self._lock = threading.Lock()
        self._loaded = self._load()

    def _load(self) -> _Loaded:
        stat = self._path.stat()
        return _Loaded((stat.st_mtime_ns, stat.st_size), read_clients(self._path))

    def _clients(self) -> tuple[_Client, ...]:
        with self._lock:
            stat = self._path.stat()
            if (stat.st_mtime_ns, stat.st_size) != self._loaded.stamp:
                self._loaded = self._load()
            return self._loaded.clients

    def authorize(self, authorization: str | None) -> str:
        """The name of the client an ``Authorization`` header belongs to; Unauthorized when it has no bearer
        token or an unknown one, Forbidden when its client is not allow-listed."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a bearer token is required")
        presented = token.strip().encode()
        name = None
        for client in self._clients():  # every token compared, in constant time each
            if hmac.compare_digest(client.token.encode(), presented):
                name = client.name
        if name is None:
            raise Unauthorized("unknown bearer token")
        if self._allowed and name not in self._allowed:
            raise Forbidden(f"client {name} is not in dicomweb.stow.allowed_clients")
        return name
