"""Geometry: Qwen-VL's resize rule (the processor's grid) and exact, invertible box mapping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from node.imaging.geometry import FrameRef, Geometry, Placement, SourceBox
from node.model.resize import smart_resize

MIN_PIXELS, MAX_PIXELS = 200_704, 1_003_520  # 256·28·28 … 1280·28·28
FACTOR = 28  # Qwen2.5-VL: patch 14 × merge 2

sizes = st.integers(min_value=28, max_value=4096)


@given(sizes, sizes)
def test_smart_resize_obeys_its_rule(height: int, width: int) -> None:
    assume(max(height, width) / min(height, width) <= 200)
    h, w = smart_resize(height, width, MIN_PIXELS, MAX_PIXELS, FACTOR)
    assert h % 28 == 0 and w % 28 == 0
    assert h * w <= MAX_PIXELS or min(h, w) == 28
    assert h * w >= MIN_PIXELS or h * w > MAX_PIXELS
    # aspect ratio kept within the rounding of one 28-pixel step on each side
    assert abs(h / w - height / width) <= (28 / min(h, w)) * (1 + height / width) + 1e-9


def test_smart_resize_known_values() -> None:
    assert smart_resize(512, 512, MIN_PIXELS, MAX_PIXELS, FACTOR) == (504, 504)  # 512/28 rounds to 18
    assert smart_resize(3000, 2500, MIN_PIXELS, MAX_PIXELS, FACTOR) == (1092, 896)  # scaled down, floored
    assert smart_resize(64, 64, MIN_PIXELS, MAX_PIXELS, FACTOR) == (448, 448)  # scaled up to min_pixels exactly
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10_000, 28, MIN_PIXELS, MAX_PIXELS, FACTOR)


def _model_size(frame: FrameRef) -> tuple[int, int]:
    height, width = smart_resize(frame.rows, frame.columns, MIN_PIXELS, MAX_PIXELS, FACTOR)
    return width, height


frames = st.builds(FrameRef, st.just("1.2.3.4"), st.integers(1, 4), st.integers(28, 3000), st.integers(28, 3000))


@settings(max_examples=300)
@given(frames, st.data())
def test_box_round_trip_source_model_source(frame: FrameRef, data: st.DataObject) -> None:
    assume(max(frame.rows, frame.columns) / min(frame.rows, frame.columns) <= 200)
    geometry = Geometry.single(frame, _model_size(frame))
    col0 = data.draw(st.floats(0, frame.columns - 1))
    row0 = data.draw(st.floats(0, frame.rows - 1))
    col1 = data.draw(st.floats(col0 + 1, frame.columns))
    row1 = data.draw(st.floats(row0 + 1, frame.rows))
    box = SourceBox(frame, col0, row0, col1, row1)
    back = geometry.box_to_source(*geometry.box_to_model(box))
    assert back is not None and back.frame == frame
    for a, b in ((back.column_min, col0), (back.row_min, row0), (back.column_max, col1), (back.row_max, row1)):
        assert abs(a - b) < 1e-6


@settings(max_examples=200)
@given(st.integers(1, 4), st.integers(28, 600), st.integers(28, 600), st.integers(28, 600), st.integers(28, 600))
def test_montage_boxes_map_to_their_own_frame(frames_across: int, rows: int, columns: int, tile_w: int, tile_h: int):
    placements = tuple(
        Placement(FrameRef("1.2.3", index + 1, rows, columns), index * tile_w, 0, tile_w, tile_h)
        for index in range(frames_across)
    )
    geometry = Geometry(tile_w * frames_across, tile_h, placements)
    for placement in placements:
        box = SourceBox(placement.source, columns * 0.25, rows * 0.25, columns * 0.75, rows * 0.75)
        back = geometry.box_to_source(*geometry.box_to_model(box))
        assert back is not None and back.frame == placement.source
        assert abs(back.column_min - box.column_min) < 1e-6 and abs(back.row_max - box.row_max) < 1e-6


def _resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = ((np.arange(height) + 0.5) * image.shape[0] / height).astype(int)
    cols = ((np.arange(width) + 0.5) * image.shape[1] / width).astype(int)
    return image[rows][:, cols]


@pytest.mark.parametrize(("rows", "columns"), [(512, 512), (2500, 3000), (300, 1200), (64, 80)])
def test_box_around_a_lesion_in_model_space_lands_on_the_lesion(rows: int, columns: int) -> None:
    source = np.zeros((rows, columns), dtype=np.uint8)
    r0, r1, c0, c1 = rows // 3, rows // 3 + rows // 8 + 2, columns // 2, columns // 2 + columns // 7 + 2
    source[r0:r1, c0:c1] = 255
    frame = FrameRef("1.2.3", 1, rows, columns)
    geometry = Geometry.single(frame, _model_size(frame))
    model_image = _resize_nearest(source, geometry.height, geometry.width)
    ys, xs = np.nonzero(model_image)
    # what a model that found the lesion would answer: its bounding box in input pixels
    back = geometry.box_to_source(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert back is not None
    scale_x, scale_y = columns / geometry.width, rows / geometry.height
    assert abs(back.column_min - c0) <= max(1, scale_x) and abs(back.column_max - c1) <= max(1, scale_x)
    assert abs(back.row_min - r0) <= max(1, scale_y) and abs(back.row_max - r1) <= max(1, scale_y)


def test_boxes_are_clipped_to_the_image_and_empty_ones_dropped() -> None:
    frame = FrameRef("1.2.3", 1, 512, 512)
    geometry = Geometry.single(frame, (504, 504))
    clipped = geometry.box_to_source(-50, -50, 100, 100)
    assert clipped is not None and clipped.column_min == 0 and clipped.row_min == 0
    assert geometry.box_to_source(600, 600, 700, 700) is None  # centre off the image
    assert geometry.box_to_source(10, 10, 10, 50) is None  # no width
