"""Reading a stored instance's attributes without its bulk data.

``pydicom.dcmread(stop_before_pixels=True)`` stops at the pixel data and silently loses any element a
sender wrote after it (a Study Instance UID or Modality out of order, as some real-world files have).
:func:`read_attributes` reads every element and leaves values over 4 KB (pixel data, waveforms) on
disk until asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import FileDataset

#: Values longer than this are read only when used.
DEFER_BYTES = "4 KB"


def read_attributes(path: Path, tags: Sequence[str] | None = None) -> FileDataset:
    """The instance at ``path`` (only ``tags`` when given), its bulk values read lazily."""
    return pydicom.dcmread(path, defer_size=DEFER_BYTES, specific_tags=list(tags) if tags else None)
