"""A study's instances → a bounded set of key frames for the model.

CT/MR/PT/NM: the series with the most slices, slices ordered by position along the slice
normal, ``volume_frames`` of them spaced as training sampled its volumes and videos (2 by
default). Multi-frame (ultrasound cine, enhanced objects) likewise. Mammography: one frame per
view (laterality + view position). Anything else: every instance's frames in series/instance
order, evenly sampled down to ``max_images``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from node.dicom_files import read_attributes

VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})


@dataclass(frozen=True)
class InstanceInfo:
    """What key-frame selection needs to know of one stored instance (read without pixels)."""

    path: Path
    series_uid: str
    modality: str
    instance_number: int
    slice_position: float | None
    frames: int
    view: str  # laterality and view position, for mammography
    is_waveform: bool  # a waveform object (ECG): plotted, not decoded

    @classmethod
    def read(cls, path: Path) -> InstanceInfo:
        """Read the header of the instance at ``path``."""
        ds = read_attributes(path)
        position = None
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
            normal = np.cross(orientation[:3], orientation[3:])
            position = float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)))
        laterality = str(ds.get("ImageLaterality", ds.get("Laterality", "")) or "")
        return cls(
            path=path,
            series_uid=str(ds.get("SeriesInstanceUID", "")),
            modality=str(ds.get("Modality", "")),
            instance_number=int(ds.get("InstanceNumber", 0) or 0),
            slice_position=position,
            frames=int(ds.get("NumberOfFrames", 1) or 1),
            view=f"{laterality} {ds.get('ViewPosition', '') or ''}".strip(),
            is_waveform="WaveformSequence" in ds,
        )


def evenly_spaced(count: int, wanted: int) -> list[int]:
    """``wanted`` indices spread over ``range(count)`` as training sampled frames
    (``extract_video_frames``: the middle one alone, else ``int(i·(count−1)/(wanted−1))``, ends
    included); all of them if there are no more than ``wanted``."""
    if count <= wanted:
        return list(range(count))
    if wanted == 1:
        return [count // 2]
    return sorted({int(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


def select_key_frames(instances: list[InstanceInfo], max_images: int,
                      volume_frames: int | None = None) -> list[tuple[Path, int]]:
    """(path, 0-based frame index) of the key frames: ``volume_frames`` of a volume or a multi-frame
    image (at most ``max_images``), at most ``max_images`` of anything else."""
    if not instances or max_images < 1:
        return []
    per_volume = min(volume_frames or max_images, max_images)
    by_series: dict[str, list[InstanceInfo]] = defaultdict(list)
    for info in instances:
        by_series[info.series_uid].append(info)
    modality = instances[0].modality
    if modality in VOLUME_MODALITIES and all(i.frames == 1 for i in instances):
        series = max(by_series.values(), key=len)
        series.sort(key=lambda i: (i.slice_position if i.slice_position is not None else i.instance_number,
                                   i.instance_number))
        return [(series[i].path, 0) for i in evenly_spaced(len(series), per_volume)]
    if modality == "MG":
        views: dict[str, InstanceInfo] = {}
        for info in sorted(instances, key=lambda i: (i.series_uid, i.instance_number)):
            views.setdefault(info.view or str(info.path), info)
        return [(info.path, 0) for info in list(views.values())[:max_images]]
    frames = [
        (info.path, index)
        for info in sorted(instances, key=lambda i: (i.series_uid, i.instance_number))
        for index in range(info.frames)
    ]
    wanted = per_volume if any(info.frames > 1 for info in instances) else max_images
    return [frames[i] for i in evenly_spaced(len(frames), wanted)]
