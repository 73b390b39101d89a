"""Who may store through STOW-RS: the clients' bearer tokens (``dicomweb.stow.tokens_file``, read by
:mod:`node.ops.tokens`: a mounted Secret directory or a ``[{name, token}]`` file, each name an AE-title-like client
name) and the allow-list of client names (``dicomweb.stow.allowed_clients``), as AE titles are allow-listed for
C-STORE."""

from __future__ import annotations

from node.config.dicomweb import CLIENT_NAME, StowConfig
from node.errors import DataError
from node.ops.tokens import TokenSecret, Unauthorized

__all__ = ["Clients", "Forbidden", "Unauthorized"]


class Forbidden(DataError):
    """A known client that may not store (HTTP 403)."""


class Clients:
    """The tokens secret, read again when it changes (a rotated secret), and the allow-list; the secret is read
    once at construction, so a bad one is refused at start (:class:`~node.ops.tokens.TokensError`)."""

    def __init__(self, config: StowConfig) -> None:
        assert config.tokens_file is not None
        self._secret = TokenSecret(config.tokens_file, "dicomweb.stow.tokens_file", CLIENT_NAME.validate_python)
        self._allowed = frozenset(config.allowed_clients)

    def authorize(self, authorization: str | None) -> str:
        """The name of the client an ``Authorization`` header belongs to; Unauthorized when it has no bearer
        token or an unknown one, Forbidden when its client is not allow-listed."""
        name = self._secret.client(authorization)
        if self._allowed and name not in self._allowed:
            raise Forbidden(f"client {name} is not in dicomweb.stow.allowed_clients")
        return name
