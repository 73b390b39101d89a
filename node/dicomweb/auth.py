"""How the node proves itself to a DICOMweb archive: basic (the password) or a bearer token, each read from
its file again whenever the file changes (a rotated secret takes effect without a restart), or OAuth2 client
credentials (a token fetched through the node's pooled outbound client, kept until shortly before it expires,
and fetched anew once when the archive answers 401)."""

from __future__ import annotations

import base64
import ssl
import threading
import time
from collections.abc import Generator
from pathlib import Path

import httpx

from node.config import DicomWebAuth
from node.errors import TransientError
from node.http_client import outbound_client
from node.ops.reloading import Reloading

#: A token is fetched anew this long before the expiry its endpoint gave.
REFRESH_MARGIN_SECONDS = 30.0


class TokenError(TransientError):
    """The token endpoint did not give a token; the message says why (never the secret)."""


def _secret(path: Path) -> str:
    return path.read_text().strip()


class SecretFileAuth(httpx.Auth):
    """An ``Authorization`` header made of a secret file's content, the file read again when it changes
    (:class:`Reloading`)."""

    def __init__(self, path: Path) -> None:
        self._secret = Reloading(path, _secret)

    def header(self, secret: str) -> str:
        """The header's value for the file's content."""
        raise NotImplementedError

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the header, made of the file as it is now."""
        request.headers["Authorization"] = self.header(self._secret.current())
        yield request


class BearerFileAuth(SecretFileAuth):
    """``Authorization: Bearer <the file's content>``."""

    def header(self, secret: str) -> str:
        """``Bearer <token>``."""
        return f"Bearer {secret}"


class BasicFileAuth(SecretFileAuth):
    """HTTP basic (RFC 7617) with ``user`` and the password in the file."""

    def __init__(self, user: str, password_file: Path) -> None:
        super().__init__(password_file)
        self._user = user

    def header(self, secret: str) -> str:
        """``Basic <base64 of user:password>``."""
        return "Basic " + base64.b64encode(f"{self._user}:{secret}".encode()).decode()


class ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client credentials (RFC 6749 §4.4): the token is asked of ``token_url`` with the client's id and
    secret (HTTP basic), kept until ``REFRESH_MARGIN_SECONDS`` before it expires, and asked again once when
    the archive answers 401 (revoked early). The token endpoint is asked through a pooled outbound client of
    its own (:func:`node.http_client.outbound_client`: timeouts, connection retries, the archive's TLS
    context); :meth:`close` closes it."""

    requires_response_body = False

    def __init__(self, settings: DicomWebAuth, read_seconds: float, tls: ssl.SSLContext | None) -> None:
        assert settings.token_url is not None and settings.client_secret_file is not None  # (the model checks)
        self._settings = settings
        self._client = outbound_client(read_seconds=read_seconds, tls=tls, max_connections=1)
        self._token, self._expires_at = "", 0.0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the token endpoint's connections."""
        self._client.close()

    def _fetch(self) -> None:
        settings = self._settings
        assert settings.client_secret_file is not None
        form = {"grant_type": "client_credentials", **({"scope": settings.scope} if settings.scope else {})}
        try:
            answer = self._client.post(str(settings.token_url), data=form,
                                       auth=(settings.client_id, _secret(settings.client_secret_file)))
        except httpx.HTTPError as exc:
            raise TokenError(f"token endpoint unreachable: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise TokenError(f"token endpoint answered HTTP {answer.status_code}")
        try:
            body = answer.json()
            self._token = str(body["access_token"])
            lifetime = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise TokenError("token endpoint's answer has no access_token") from None
        self._expires_at = time.monotonic() + lifetime - REFRESH_MARGIN_SECONDS

    def token(self, stale: str | None = None) -> str:
        """A token that has not expired (a new one when ``stale`` is the one held: the archive refused it)."""
        with self._lock:
            if not self._token or time.monotonic() >= self._expires_at or self._token == stale:
                self._fetch()
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the token; on 401, fetch a new one and send the request again, once."""
        token = self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.token(stale=token)}"
            yield request


def make_auth(settings: DicomWebAuth, read_seconds: float, tls: ssl.SSLContext | None) -> httpx.Auth | None:
    """The httpx auth for a destination's ``auth`` settings (None for ``none``); an OAuth2 token endpoint is
    read within ``read_seconds`` and checked with the archive's ``tls`` context (None: the system's CAs)."""
    if settings.kind == "basic":
        assert settings.password_file is not None
        return BasicFileAuth(settings.user, settings.password_file)
    if settings.kind == "bearer":
        assert settings.token_file is not None
        return BearerFileAuth(settings.token_file)
    if settings.kind == "oauth2":
        return ClientCredentialsAuth(settings, read_seconds, tls)
    return None
