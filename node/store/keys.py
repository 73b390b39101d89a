"""What the state database keeps of an identifier where it must outlive the identifier itself: its HMAC-SHA256
under the node's own random key, with the name of what it identifies. The one way the store hashes identifiers —
the answers' accession numbers, the verdicts' source keys, and the study UIDs of the quality record once
retention has purged the study. A key finds the row again from the identifier (a corrected report its verdict,
a call its answer) and gives no identifier back; without the node's key file, not even a short accession number
can be found again by trying every value.

The key file (:data:`KEY_FILE`, 32 random bytes, mode 0600) lies in the state directory and is made on the
node's first start. A database written before schema 9 kept plain SHA-256 keys (:func:`legacy_key`): those
rows are kept and marked (``keyed = 0``) and still found; a row is re-keyed when its identifier comes again."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from node.durable import fsync_dir, write_atomically
from node.errors import NodeError

#: The node's identifier key, in the state directory.
KEY_FILE = "identifier.key"
KEY_BYTES = 32


def legacy_key(kind: str, identifier: str) -> str:
    """The plain SHA-256 key a node before schema 9 kept of ``identifier``; '' for an empty identifier."""
    value = identifier.strip()
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest() if value else ""


class IdentifierKeys:
    """Keys of identifiers under one node's secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def key(self, kind: str, identifier: str) -> str:
        """The key of ``identifier`` (surrounding blanks ignored) as a ``kind`` ('accession', 'study', a verdict's
        source …); '' for an empty identifier."""
        value = identifier.strip()
        return hmac.new(self._secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest() if value else ""

    def where_kept(self, column: str, kind: str, identifier: str) -> tuple[str, tuple[str, str]]:
        """An SQL condition that finds the row keeping ``identifier`` (a ``kind``) in ``column`` — under its key,
        or under the plain SHA-256 of a node before schema 9 (a row marked ``keyed = 0``) — and its parameters,
        the key first."""
        return (f"({column} = ? OR (keyed = 0 AND {column} = ?))",
                (self.key(kind, identifier), legacy_key(kind, identifier)))

    def study(self, study_uid: str) -> str:
        """What the quality record keeps of a Study Instance UID once retention has purged the study."""
        return self.key("study", study_uid)


def load_secret(directory: Path, create: bool = True) -> tuple[bytes, bool]:
    """The node's secret from ``directory``'s :data:`KEY_FILE`, and whether it was made now: a missing file is
    made (durably, mode 0600) when ``create``, else a throwaway secret is used (a read-only look finds no
    keyed row by its identifier)."""
    path = directory / KEY_FILE
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        secret = secrets.token_bytes(KEY_BYTES)
        if not create:
            return secret, False
        write_atomically(path, secret, 0o600)
        fsync_dir(directory)
        return secret, True
    if len(secret) != KEY_BYTES:
        raise NodeError(f"{path} is not a {KEY_BYTES}-byte identifier key: restore it, or remove it to start anew")
    return secret, False
