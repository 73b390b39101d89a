"""The feedback API's bearer tokens, from a mounted secret: a directory (a Kubernetes Secret mounted as a volume:
each file one token, its name the token's name) or a file of ``name:token`` lines. Read at each request, so a
rotated secret takes effect without a restart; every token is compared, in constant time."""

from __future__ import annotations

import hmac
from pathlib import Path

from node.errors import NodeError


class TokensError(NodeError):
    """The tokens secret cannot be read (the message names the path, never a token)."""


def read_tokens(path: Path) -> dict[str, str]:
    """Token name → token. A directory's hidden files (the ``..data`` links a mounted Secret has) are skipped;
    a file's blank lines and ``#`` comments too."""
    try:
        if path.is_dir():
            return {entry.name: entry.read_text(encoding="utf-8").strip() for entry in sorted(path.iterdir())
                    if not entry.name.startswith(".") and entry.is_file()}
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokensError(f"cannot read the feedback tokens {path} ({type(exc).__name__})") from exc
    tokens = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, token = line.partition(":")
        if not colon or not name.strip() or not token.strip():
            raise TokensError(f"feedback tokens {path} line {number} is not 'name:token'")
        tokens[name.strip()] = token.strip()
    return tokens


def token_name(presented: str, tokens: dict[str, str]) -> str | None:
    """The name of the token ``presented`` is, None when it is none of them (empty tokens never match). Each
    token is compared in constant time, and every one is compared whichever matches."""
    found = None
    for name, token in tokens.items():
        if hmac.compare_digest(presented.encode(), token.encode()) and token:
            found = name
    return found


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, None when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None
