"""What a valid DICOM UID is (PS3.5 9.1): dot-separated numbers without leading zeros, at most 64 characters —
one rule for the C-STORE and STOW-RS checks, the feedback API's body and the UIDs a QIDO-RS answer gives."""

from __future__ import annotations

import re

#: A UID's characters (its length, at most :data:`MAX_UID_LENGTH`, is checked apart).
UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
MAX_UID_LENGTH = 64
_UID = re.compile(UID_PATTERN)


def is_uid(value: str) -> bool:
    """Whether ``value`` is a valid UID."""
    return 0 < len(value) <= MAX_UID_LENGTH and _UID.match(value) is not None
