"""The stages before the engine, chained for one study: route → gather → image.

The scheduler runs these stages itself, each on its own pool; ``qoq-node infer``, the benchmarks and the
tests run them through :func:`prepare_study`, so every caller goes through the same stage functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from node.config import ImagingConfig
from node.context.gather import ContextGatherer
from node.context.gathered import gather
from node.imaging.prepared import Prepared, prepare
from node.model.profiles import ModelProfile
from node.routing import Router, Skipped, route


def prepare_study(study_uid: str, files: Sequence[Path], router: Router, imaging: ImagingConfig,
                  profile: ModelProfile, gatherer: ContextGatherer | None = None,
                  now: float | None = None) -> Prepared | Skipped:
    """One study routed, its context gathered (with ``gatherer``) and its inputs made for ``profile``'s
    family; or why it is skipped. A data fault raises (:class:`node.errors.DataError`)."""
    routed = route(study_uid, files, router)
    if isinstance(routed, Skipped):
        return routed
    return prepare(gather(routed, gatherer, profile.takes_time_series, now), profile, imaging)
