"""Tiled prediction of 2D images of any size with smoothly blended overlaps.

Every tile is exactly ``tile_size x tile_size`` (so it is a multiple of the model's token size and all
tiles batch together). Tiles are cut on the fly from the image with mirror (reflect) indexing, so the
image is never padded in memory: images smaller than a tile are reflected (repeatedly if needed) up to
one tile, as BiaPy does, and when an axis needs several tiles the border tiles see a mirrored margin of
``overlap // 2`` pixels. The image may be any array that slices like numpy (zarr, dask, a tifffile
store): only the pixels of one tile are read at a time. :func:`plan_tiles` picks, among tile sizes a
little larger than the requested one, the grid computing the fewest pixels.

Overlapping tile outputs are blended with a separable window that is 1 in the tile centre and ramps
down over ``overlap`` pixels as a squared raised cosine: about 1e-5 on the outermost pixel, where a
model's output is least reliable (it sees no context there), but never 0, so every pixel has a positive
weight and the blend has a continuous slope (no seams). Since all
tiles lie on a grid, the sum of weights is the outer product of two 1D sums, known before the first
tile: each tile is added already divided by it, so the centre of a tile is final as soon as that tile
is done (progressive display) and only the float32 output is accumulated: memory is the output (which
may itself be a zarr array on disk) plus one batch of tiles, whatever the image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, ModelError

# (B, 1, T, T) float32 tiles -> (B, C, T, T) outputs.
BatchFunction = Callable[[np.ndarray], np.ndarray]
# Called after each batch with (tiles done, total tiles, the image regions (y0, y1, x0, x1) just written).
BatchHook = Callable[[int, int, list[tuple[int, int, int, int]]], None]
# Largest tile :func:`plan_tiles` considers, as a multiple of the requested tile size.
MAX_TILE_GROWTH = 1.25
# Default tile overlap, a fraction of the tile: BiaPy's context. It predicted the challenge with 1024 px tiles
# padded by 200 px of context on each side (400 px shared by neighbours), and so do we: at seams, every output
# pixel is blended from tiles that see at least 200 px around it (scaled with the tile size).
DEFAULT_OVERLAP = 400 / 1024
# Tile side for models that do not carry their training size.
DEFAULT_TILE_SIZE = 1024


def overlap_pixels(tile_size: int, overlap: float) -> int:
    """Overlap in pixels from a fraction of the tile size (``0 <= overlap <= 0.5``)."""
    if not 0 <= overlap <= 0.5:
        raise DataError(f"Tile overlap must be a fraction of the tile size between 0 and 0.5, got {overlap}.")
    return round(overlap * tile_size)


@dataclass(frozen=True)
class TileGrid:
    """Where square tiles go: tile ``(i, j)`` covers image rows ``ys[i]:ys[i]+tile`` and columns
    ``xs[j]:xs[j]+tile`` (starts may be negative and ends may pass the image: mirrored pixels)."""

    shape: tuple[int, int]
    tile: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def plan(cls, shape: tuple[int, int], tile: int, overlap: int = 0) -> TileGrid:
        if tile < 1 or not 0 <= overlap < tile:
            raise DataError(
                f"Invalid tiling: tile {tile} px with overlap {overlap} px (need 0 <= overlap < tile)."
            )
        if len(shape) != 2 or min(shape) < 1:
            raise DataError(f"Tiling needs a non-empty 2D image, got shape {tuple(shape)}.")
        margin = overlap // 2
        return cls(tuple(shape), tile, overlap, *(_axis_starts(n, tile, overlap, margin) for n in shape))

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((y, x) for y in self.ys for x in self.xs)

    def window(self) -> np.ndarray:
        """1D blending weights of one tile edge (positive everywhere)."""
        return blend_window(self.tile, self.overlap)

    def computed_pixels(self) -> int:
        """Pixels the model computes for this grid (tiles times tile area)."""
        return len(self) * self.tile**2

    def weight_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-row and per-column sums of the tiles' 1D weights; their outer product is the 2D weight sum."""
        window = self.window()
        return tuple(_axis_weight_sum(n, starts, window) for n, starts in zip(self.shape, (self.ys, self.xs)))


def blend_window(length: int, ramp: int) -> np.ndarray:
    """Squared raised-cosine ramps of ``ramp`` pixels at both ends, 1 in between, never 0 (float32)."""
    window = np.ones(length, dtype=np.float64)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        rise = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)) ** 2
        window[:ramp] = rise
        window[length - ramp :] = rise[::-1]
    return window.astype(np.float32)


def reflect_indices(start: int, length: int, size: int) -> np.ndarray:
    """Indices ``start .. start+length-1`` mirrored into ``[0, size)`` (numpy ``reflect`` mode, repeating)."""
    indices = np.arange(start, start + length)
    if size == 1:
        return np.zeros(length, dtype=np.intp)
    period = 2 * (size - 1)
    indices = np.mod(indices, period)
    return np.where(indices >= size, period - indices, indices).astype(np.intp)


def extract_tile(image: np.ndarray, y: int, x: int, tile: int) -> np.ndarray:
    """The ``tile x tile`` window of ``image`` at ``(y, x)``, mirrored where it leaves the image."""
    h, w = image.shape
    if y >= 0 and y + tile <= h and x >= 0 and x + tile <= w:
        return np.asarray(image[y : y + tile, x : x + tile])
    rows, columns = reflect_indices(y, tile, h), reflect_indices(x, tile, w)
    top, left = int(rows.min()), int(columns.min())
    block = np.asarray(
        image[top : int(rows.max()) + 1, left : int(columns.max()) + 1]
    )  # read only what is used
    return block[np.ix_(rows - top, columns - left)]


def plan_tiles(
    shape: tuple[int, int],
    tile_size: int,
    token: int,
    overlap: float = DEFAULT_OVERLAP,
    max_growth: float = MAX_TILE_GROWTH,
) -> TileGrid:
    """The grid computing the fewest pixels with at least ``round(overlap * tile_size)`` px of overlap.

    Tiles are ``tile_size`` to ``max_growth * tile_size`` px, multiples of ``token`` (the ViT accepts any
    multiple; its position embeddings resample). A 2048 px image in 1024 px tiles with 128 px overlap
    needs 3x3 tiles (2.25x its pixels); 1152 px tiles cover it in 2x2 (1.27x). With the default 400 px
    (BiaPy's context) 1024 px tiles need 4x4 (3.8x), 1088 px tiles 3x3 (2.5x). Ties go to the smaller tile.
    """
    tile_size = max(token, tile_size // token * token)
    overlap_px = overlap_pixels(tile_size, overlap)
    largest = max(tile_size, int(tile_size * max_growth) // token * token)
    grids = [TileGrid.plan(tuple(shape), tile, overlap_px) for tile in range(tile_size, largest + 1, token)]
    return min(grids, key=lambda grid: (grid.computed_pixels(), grid.tile))


def tile_order(grid: TileGrid, focus: tuple[float, float] | None = None) -> list[tuple[int, int]]:
    """Tile positions row by row, or nearest first to the image point ``focus`` (e.g. the viewer's centre)."""
    positions = list(grid)
    if focus is None:
        return positions
    half = grid.tile / 2
    return sorted(positions, key=lambda p: (p[0] + half - focus[0]) ** 2 + (p[1] + half - focus[1]) ** 2)


def predict_tiled(
    image: np.ndarray,
    predict_batch: BatchFunction,
    tile_size: int,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 1,
    on_batch: BatchHook | None = None,
) -> np.ndarray:
    """Predict a 2D ``image`` on a regular grid of ``tile_size`` tiles; returns a ``(C, H, W)`` float32 array.

    ``overlap`` is a fraction of ``tile_size``. See :func:`predict_grid` for ``on_batch``.
    """
    if image.ndim != 2:
        raise DataError(f"Tiled prediction needs a 2D image, got shape {image.shape}.")
    grid = TileGrid.plan(image.shape, tile_size, overlap_pixels(tile_size, overlap))
    return predict_grid(image, predict_batch, grid, batch_size, on_batch)


def predict_grid(
    image,
    predict_batch: BatchFunction,
    grid: TileGrid,
    batch_size: int = 1,
    on_batch: BatchHook | None = None,
    out=None,
    focus: tuple[float, float] | None = None,
):
    """Predict a 2D ``image`` (any array slicing like numpy) on ``grid``, adding the blended tiles to ``out``.

    ``out`` is a zeroed ``(C, H, W)`` array, or ``(H, W)`` for one-channel models (numpy, zarr...); by
    default a float32 numpy array is made. Tiles nearest ``focus`` run first, the nearest alone in the first
    batch (it is shown sooner). ``on_batch(done, total, regions)`` runs after every batch (use it for
    progress, display and to stop: an exception raised there aborts the prediction, leaving the finished
    tiles in ``out``). Returns ``out``.
    """
    if len(image.shape) != 2:
        raise DataError(f"Tiled prediction needs a 2D image, got shape {tuple(image.shape)}.")
    if batch_size < 1:
        raise DataError(f"Batch size must be at least 1, got {batch_size}.")
    window = grid.window()
    row_sums, column_sums = grid.weight_sums()
    positions = tile_order(grid, focus)
    done = 0
    for batch_positions in _batches(positions, batch_size, first_alone=focus is not None):
        tiles = np.stack([extract_tile(image, y, x, grid.tile) for y, x in batch_positions])
        predicted = np.asarray(predict_batch(tiles[:, None].astype(np.float32, copy=False)))
        _check_output(predicted, len(batch_positions), grid.tile)
        if out is None:
            out = np.zeros((predicted.shape[1], *image.shape), dtype=np.float32)
        regions = [
            _accumulate(out, tile_output, y, x, window, row_sums, column_sums)
            for (y, x), tile_output in zip(batch_positions, predicted)
        ]
        done += len(batch_positions)
        if on_batch is not None:
            on_batch(done, len(positions), regions)
    return out


def _batches(positions: list, batch_size: int, first_alone: bool) -> Iterator[list]:
    """``positions`` in batches of ``batch_size``, the first one alone if ``first_alone``."""
    if first_alone:
        yield positions[:1]
        positions = positions[1:]
    for first in range(0, len(positions), batch_size):
        yield positions[first : first + batch_size]


def count_tiles(shape: tuple[int, int], tile_size: int, overlap: float = DEFAULT_OVERLAP) -> int:
    """Number of tiles :func:`predict_tiled` runs for an image of ``shape``."""
    return len(TileGrid.plan(tuple(shape), tile_size, overlap_pixels(tile_size, overlap)))


def _axis_starts(n: int, tile: int, overlap: int, margin: int) -> tuple[int, ...]:
    """Tile starts along one axis: a single centred tile if the axis fits, else evenly spread tiles
    covering ``[-margin, n + margin)`` with at least ``overlap`` pixels shared by neighbours."""
    if n <= tile:
        return (-((tile - n) // 2),)
    extent = n + 2 * margin
    count = math.ceil((extent - overlap) / (tile - overlap))
    starts = np.round(np.linspace(0, extent - tile, count)).astype(int) - margin
    return tuple(int(s) for s in starts)


def _axis_weight_sum(n: int, starts: tuple[int, ...], window: np.ndarray) -> np.ndarray:
    total = np.zeros(n, dtype=np.float32)
    for start in starts:
        lo, hi = max(start, 0), min(start + len(window), n)
        total[lo:hi] += window[lo - start : hi - start]
    return total


def _accumulate(
    output,
    tile_output: np.ndarray,
    y: int,
    x: int,
    window: np.ndarray,
    row_sums: np.ndarray,
    column_sums: np.ndarray,
) -> tuple[int, int, int, int]:
    """Add the part of one tile's output inside the image, weighted and divided by the grid's weight sums;
    returns the region written, ``(y0, y1, x0, x1)``."""
    tile = len(window)
    h, w = output.shape[-2:]
    y0, y1, x0, x1 = max(y, 0), min(y + tile, h), max(x, 0), min(x + tile, w)
    rows = window[y0 - y : y1 - y] / row_sums[y0:y1]
    columns = window[x0 - x : x1 - x] / column_sums[x0:x1]
    weighted = tile_output[:, y0 - y : y1 - y, x0 - x : x1 - x] * np.outer(rows, columns)
    output[..., y0:y1, x0:x1] += weighted if output.ndim == 3 else weighted[0]
    return y0, y1, x0, x1


def _check_output(predicted: np.ndarray, count: int, tile: int) -> None:
    if predicted.ndim != 4 or predicted.shape[0] != count or predicted.shape[2:] != (tile, tile):
        raise ModelError(
            f"The model returned shape {predicted.shape} for {count} tiles of {tile}x{tile}; "
            f"expected ({count}, C, {tile}, {tile})."
        )
