"""The exact map between model-input pixels and source pixels.

Coordinates are continuous: pixel ``i`` covers ``[i, i + 1)``, so a box's corners are pixel
edges and a resize is a pure scale. A model input is built from one or more source frames,
each *placed* in it (resized, and for a montage offset); boxes the model reports in input
pixels are mapped back through the placement they fall in. Everything here is pure and
invertible. A model input records two sizes: the image the model gets (after the training's
pre-resize: the frame its boxes are in) and the grid the processor rounds it to
(:func:`node.model.resize.smart_resize`, Qwen-VL's own rule, with the family's grid factor).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrameRef:
    """One frame of one source instance, with its pixel matrix size."""

    sop_instance_uid: str
    frame: int  # 1-based, as DICOM Referenced Frame Number
    rows: int
    columns: int


@dataclass(frozen=True)
class SourceBox:
    """A box on a source frame, in continuous column/row coordinates (pixel edges)."""

    frame: FrameRef
    column_min: float
    row_min: float
    column_max: float
    row_max: float


@dataclass(frozen=True)
class Placement:
    """A source frame resized to ``width`` × ``height`` and put at (``left``, ``top``) in the input."""

    source: FrameRef
    left: int
    top: int
    width: int
    height: int

    @property
    def scale_x(self) -> float:
        """Model pixels per source column."""
        return self.width / self.source.columns

    @property
    def scale_y(self) -> float:
        """Model pixels per source row."""
        return self.height / self.source.rows

    def contains(self, x: float, y: float) -> bool:
        """Whether the model-input point lies in this placement."""
        return self.left <= x <= self.left + self.width and self.top <= y <= self.top + self.height

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        """Model-input point → (column, row) on the source frame."""
        return (x - self.left) / self.scale_x, (y - self.top) / self.scale_y

    def to_model(self, column: float, row: float) -> tuple[float, float]:
        """(column, row) on the source frame → model-input point."""
        return self.left + column * self.scale_x, self.top + row * self.scale_y


@dataclass(frozen=True)
class Geometry:
    """How one model input image was made from its source frames: its size (the frame the model's
    boxes are in), the placements of its source frames, and the processor's grid for it."""

    width: int
    height: int
    placements: tuple[Placement, ...]
    grid: tuple[int, int] | None = None  # (width, height) the processor rounds the image to

    @classmethod
    def single(cls, source: FrameRef, size: tuple[int, int], grid: tuple[int, int] | None = None) -> Geometry:
        """The whole frame resized to ``size`` (width, height): no crop, no padding."""
        width, height = size
        return cls(width, height, (Placement(source, 0, 0, width, height),), grid)

    def box_to_source(self, x1: float, y1: float, x2: float, y2: float) -> SourceBox | None:
        """Map a model-input box to the frame its centre falls on, clipped to that frame.

        Returns None when the centre is on no frame or the clipped box has no area.
        """
        centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
        for placement in self.placements:
            if not placement.contains(centre_x, centre_y):
                continue
            left, right = sorted((x1, x2))
            top, bottom = sorted((y1, y2))
            left, right = max(left, placement.left), min(right, placement.left + placement.width)
            top, bottom = max(top, placement.top), min(bottom, placement.top + placement.height)
            col0, row0 = placement.to_source(left, top)
            col1, row1 = placement.to_source(right, bottom)
            if col1 - col0 <= 0 or row1 - row0 <= 0:
                return None
            return SourceBox(placement.source, col0, row0, col1, row1)
        return None

    def box_to_model(self, box: SourceBox) -> tuple[float, float, float, float]:
        """Map a source box into this model input (the inverse of :meth:`box_to_source`)."""
        for placement in self.placements:
            if placement.source == box.frame:
                x1, y1 = placement.to_model(box.column_min, box.row_min)
                x2, y2 = placement.to_model(box.column_max, box.row_max)
                return x1, y1, x2, y2
        raise KeyError(f"frame {box.frame} is not part of this input")
