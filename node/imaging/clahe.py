"""Contrast-limited adaptive histogram equalisation of an 8-bit image, as OpenCV's ``createCLAHE``
computes it — the enhancement CLIMB applied to its CT angiography training slices
(``src/datasets/ct/nifti_utils.py``: clip limit 1.5, 8 × 8 tiles).

Written in numpy so the node needs no OpenCV (60 MB) on air-gapped hosts; a test holds it to
OpenCV's own output. The image is cut into tiles (padded at the bottom and right by reflection when
it does not divide evenly); each tile's 256-bin histogram is clipped at ``clip_limit · area / 256``
(at least 1), the clipped counts are handed back evenly and the remainder one per bin at a regular
step; its cumulative sum scaled by ``255 / area`` is the tile's look-up table; each pixel's value is
the bilinear blend of the tables of the four tile centres around it, rounded half to even.
"""

from __future__ import annotations

import numpy as np

BINS = 256


def _tile_luts(padded: np.ndarray, tiles_y: int, tiles_x: int, clip_limit: float) -> np.ndarray:
    """[tiles_y, tiles_x, 256] look-up tables of an image whose sides the tile counts divide."""
    tile_h, tile_w = padded.shape[0] // tiles_y, padded.shape[1] // tiles_x
    area = tile_h * tile_w
    blocks = padded.reshape(tiles_y, tile_h, tiles_x, tile_w).transpose(0, 2, 1, 3).reshape(-1, area)
    offsets = np.arange(len(blocks))[:, None] * BINS
    hist = np.bincount((blocks.astype(np.int64) + offsets).ravel(), minlength=len(blocks) * BINS).reshape(-1, BINS)
    if clip_limit > 0:
        limit = max(int(clip_limit * area / BINS), 1)
        clipped = np.maximum(hist - limit, 0).sum(axis=1)
        hist = np.minimum(hist, limit) + (clipped // BINS)[:, None]
        for tile, residual in enumerate(clipped % BINS):
            if residual:
                hist[tile, np.arange(0, BINS, max(BINS // residual, 1))[:residual]] += 1
    scale = np.float32(BINS - 1) / np.float32(area)
    luts = np.rint(np.cumsum(hist, axis=1).astype(np.float32) * scale)
    return np.clip(luts, 0, 255).reshape(tiles_y, tiles_x, BINS)


def _neighbours(length: int, tile: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each position along one axis: the two tile indices around it and their weights."""
    position = np.arange(length, dtype=np.float32) * (np.float32(1) / np.float32(tile)) - np.float32(0.5)
    first = np.floor(position).astype(np.int64)
    weight = (position - first).astype(np.float32)
    return np.maximum(first, 0), np.minimum(first + 1, tiles - 1), np.float32(1) - weight, weight


def clahe(image: np.ndarray, clip_limit: float = 1.5, tiles: tuple[int, int] = (8, 8)) -> np.ndarray:
    """``image`` (2-D uint8) equalised as ``cv2.createCLAHE(clip_limit, tiles).apply(image)``;
    ``tiles`` is (across, down) as OpenCV's tileGridSize."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError("CLAHE takes a 2-D 8-bit image")
    tiles_x, tiles_y = tiles
    rows, columns = image.shape
    padded = image
    if rows % tiles_y or columns % tiles_x:
        padded = np.pad(image, ((0, tiles_y - rows % tiles_y), (0, tiles_x - columns % tiles_x)), mode="reflect")
    luts = _tile_luts(padded, tiles_y, tiles_x, clip_limit)
    left, right, weight_left, weight_right = _neighbours(columns, padded.shape[1] // tiles_x, tiles_x)
    top, bottom, weight_top, weight_bottom = _neighbours(rows, padded.shape[0] // tiles_y, tiles_y)
    top, bottom = top[:, None], bottom[:, None]
    upper = luts[top, left, image] * weight_left + luts[top, right, image] * weight_right
    lower = luts[bottom, left, image] * weight_left + luts[bottom, right, image] * weight_right
    blended = upper * weight_top[:, None] + lower * weight_bottom[:, None]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
