"""Bearer tokens from a mounted secret, for the node's HTTP APIs (the feedback API, the STOW-RS receiver): one
format, read again when it changes (a rotated secret takes effect without a restart), every token compared in
constant time.

The secret is either a directory — a Kubernetes Secret mounted as a volume: each key a file, the file's name the
client's name, its content the token (hidden entries, the ``..data`` links a mounted Secret has, are skipped) — or
a YAML or JSON file holding a list of ``{name, token}``. Either way every token is at least
:data:`MIN_TOKEN_LENGTH` characters and no two clients share a token or a name. Errors name the secret and what
is wrong with it, never a token."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from node.errors import DataError
from node.ops.reloading import Reloading

#: The shortest token accepted.
MIN_TOKEN_LENGTH = 16


class TokensError(DataError):
    """The tokens secret cannot be read, or is not a valid list of clients (the message names the secret's path
    and the problem, never a token)."""


class _Client(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    token: str = Field(min_length=MIN_TOKEN_LENGTH, description="The bearer token.")


_CLIENTS = TypeAdapter(list[_Client])


def _entries(path: Path) -> object:
    """The secret's raw content: a list of ``{name, token}`` mappings (from a directory or a YAML/JSON file)."""
    if path.is_dir():
        return [{"name": entry.name, "token": entry.read_text(encoding="utf-8").strip()}
                for entry in sorted(path.iterdir()) if not entry.name.startswith(".") and entry.is_file()]
    return yaml.safe_load(path.read_text(encoding="utf-8")) or []


def _problems(error: ValidationError) -> str:
    """What a validation error found, where, quoting no input."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}".lstrip(": ")
                     for e in error.errors(include_input=False))


def read_tokens(path: Path, key: str, check_name: Callable[[str], str] | None = None) -> dict[str, str]:
    """Client name → token, from the secret at ``path`` (``key``: the setting that names it, for messages);
    ``check_name`` validates (and may normalise) each name, raising pydantic's ValidationError. TokensError
    when it cannot be read or is not valid."""
    try:
        clients = _CLIENTS.validate_python(_entries(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TokensError(f"{key} {path} cannot be read: {type(exc).__name__}") from None
    except ValidationError as exc:
        raise TokensError(f"{key} {path}: {_problems(exc)}") from None
    try:
        names = [check_name(client.name) if check_name else client.name for client in clients]
    except ValidationError as exc:  # check_name's refusal names the rule, never a token
        raise TokensError(f"{key} {path}: a client name is not valid ({_problems(exc)})") from None
    if len(set(names)) != len(names):
        raise TokensError(f"{key} {path}: a client name is given twice")
    if len({client.token for client in clients}) != len(clients):
        raise TokensError(f"{key} {path}: two clients share a token")
    return dict(zip(names, (client.token for client in clients), strict=True))


def token_name(presented: str, tokens: Mapping[str, str]) -> str | None:
    """The name of the client whose token ``presented`` is, None when none. Each token is compared in constant
    time, and every one is compared whichever matches."""
    found = None
    for name, token in tokens.items():
        if hmac.compare_digest(presented.encode(), token.encode()):
            found = name
    return found


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, None when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class Unauthorized(DataError):
    """No bearer token, or one no client has (HTTP 401); the message says which, quoting no token."""


class TokenSecret:
    """A tokens secret, read at construction (a bad secret is refused at start: :class:`TokensError`) and again
    whenever it changes (:class:`Reloading`)."""

    def __init__(self, path: Path, key: str, check_name: Callable[[str], str] | None = None) -> None:
        self._key = key
        self._secret = Reloading(path, lambda at: read_tokens(at, key, check_name))
        self.tokens()

    def tokens(self) -> dict[str, str]:
        """Client name → token, as the secret is now; TokensError when it cannot be read or is not valid."""
        try:
            return self._secret.current()
        except OSError as exc:
            raise TokensError(f"{self._key} {self._secret.path} cannot be read: {type(exc).__name__}") from None

    def client(self, authorization: str | None) -> str:
        """The name of the client an ``Authorization`` header's bearer token belongs to. Unauthorized without a
        bearer token ("a bearer token is required") or with one no client has ("unknown bearer token");
        TokensError when the secret cannot be read."""
        presented = bearer(authorization)
        if presented is None:
            raise Unauthorized("a bearer token is required")
        name = token_name(presented, self.tokens())
        if name is None:
            raise Unauthorized("unknown bearer token")
        return name
