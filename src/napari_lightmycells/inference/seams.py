"""How visible tile boundaries are in a tiled prediction.

:func:`seam_ratio` is the mean absolute step between neighbouring pixels *across* the lines where a
tile starts or ends, divided by the same mean over every other pair of neighbours. A prediction
without seams scores about 1 (boundaries look like any other place); a block grid scores well above 1.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .tiling import TileGrid


def tile_edges(grid: TileGrid) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Rows and columns (index of the first pixel after the line) where a tile of ``grid`` starts or ends
    inside the image."""

    def axis(starts: tuple[int, ...], n: int) -> tuple[int, ...]:
        edges = set(starts) | {s + grid.tile for s in starts}
        return tuple(sorted(e for e in edges if 0 < e < n))

    return axis(grid.ys, grid.shape[0]), axis(grid.xs, grid.shape[1])


def seam_ratio(image: np.ndarray, rows: tuple[int, ...], columns: tuple[int, ...]) -> float:
    """Mean ``|image[e] - image[e - 1]|`` across the given row and column lines over the same mean
    everywhere else (both axes pooled). ``rows``/``columns`` index the first pixel after each line."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise DataError(f"The seam ratio needs a 2D image, got shape {image.shape}.")
    across_rows = np.abs(np.diff(image, axis=0))  # step between row i and i + 1 at index i
    across_columns = np.abs(np.diff(image, axis=1))
    on_rows = np.zeros(across_rows.shape[0], dtype=bool)
    on_columns = np.zeros(across_columns.shape[1], dtype=bool)
    on_rows[[e - 1 for e in rows if 0 < e < image.shape[0]]] = True
    on_columns[[e - 1 for e in columns if 0 < e < image.shape[1]]] = True
    if not on_rows.any() and not on_columns.any():
        raise DataError("No tile boundary lies inside the image: there is no seam to measure.")
    seams = np.concatenate([across_rows[on_rows].ravel(), across_columns[:, on_columns].ravel()])
    elsewhere = np.concatenate([across_rows[~on_rows].ravel(), across_columns[:, ~on_columns].ravel()])
    return float(seams.mean() / max(elsewhere.mean(), 1e-12))
