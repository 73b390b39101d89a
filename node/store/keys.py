"""What the state database keeps of an identifier where it must outlive the identifier itself: its SHA-256 under
the name of what it identifies. The one way the store hashes identifiers — the answers' accession numbers, the
verdicts' source keys, and the study UIDs of the quality record once retention has purged the study. A key
finds the row again from the identifier (a corrected report its verdict, a call its answer) and gives no
identifier back: it is a pseudonym (an identifier known to a reader can be hashed and compared), not anonymous."""

from __future__ import annotations

import hashlib


def identifier_key(kind: str, identifier: str) -> str:
    """The key of ``identifier`` (surrounding blanks ignored) as a ``kind`` ('accession', 'study', a verdict's
    source …); '' for an empty identifier."""
    value = identifier.strip()
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest() if value else ""


def study_key(study_uid: str) -> str:
    """What the quality record keeps of a Study Instance UID once retention has purged the study."""
    return identifier_key("study", study_uid)
