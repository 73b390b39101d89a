"""Seam: which associations pynetdicom's association limit counts.

pynetdicom's ACSE answers an A-ASSOCIATE-RQ by comparing the acceptors among ``ae.active_associations`` with
``ae.maximum_associations``; :class:`CountingAE` answers ``active_associations`` with what the node counts.
"""

from __future__ import annotations

from collections.abc import Callable

from pynetdicom import AE
from pynetdicom.association import Association

#: The pynetdicom functions this seam was written against: name -> SHA-256 of their source (its first 16 hex digits).
RELIES_ON = {
    "pynetdicom.acse.ACSE._negotiate_as_acceptor": "fffd360957c42a8e",
}


class CountingAE(AE):
    """pynetdicom's AE, whose ``active_associations`` (the associations its limit counts, and those its
    ``shutdown`` aborts) are those ``counted`` returns."""

    def __init__(self, ae_title: str, counted: Callable[[], list[Association]]) -> None:
        super().__init__(ae_title=ae_title)
        self._counted = counted

    @property
    def active_associations(self) -> list[Association]:
        """The associations ``counted`` returns."""
        return self._counted()
