import numpy as np
import pytest

from napari_lightmycells.errors import DataError
from napari_lightmycells.inference.seams import seam_ratio, tile_edges
from napari_lightmycells.inference.tiling import TileGrid, predict_tiled


def smooth_field(size=256, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(size, size))
    kernel = np.exp(-0.5 * (np.arange(-8, 9) / 3.0) ** 2)
    blurred = np.apply_along_axis(np.convolve, 0, noise, kernel, mode="same")
    return np.apply_along_axis(np.convolve, 1, blurred, kernel, mode="same")


def test_tile_edges_are_the_starts_and_ends_inside_the_image():
    grid = TileGrid.plan((100, 64), tile=64, overlap=16)
    rows, columns = tile_edges(grid)
    assert rows == tuple(sorted({s for s in grid.ys if s > 0} | {s + 64 for s in grid.ys if s + 64 < 100}))
    assert columns == ()  # one tile covers the width


def test_seam_ratio_is_about_one_without_seams_and_large_for_a_block_grid():
    field = smooth_field()
    edges = (tuple(range(32, 256, 32)), tuple(range(32, 256, 32)))
    assert seam_ratio(field, *edges) == pytest.approx(1.0, abs=0.1)
    levels = np.random.default_rng(1).normal(scale=field.std(), size=(8, 8))
    blocks = field + np.kron(levels, np.ones((32, 32)))  # each 32 px tile shifted by its own offset
    assert seam_ratio(blocks, *edges) > 3


def test_blended_tiles_of_a_tile_dependent_model_have_no_seams_and_hard_tiles_do():
    """A stand-in model that rescales every tile by its own statistics (like instance norm)."""
    field = smooth_field(seed=2) + np.linspace(0, 30, 256)[None, :]  # brightness varies across the image

    def per_tile_norm(tiles):
        return (tiles - tiles.mean(axis=(2, 3), keepdims=True)) / tiles.std(axis=(2, 3), keepdims=True)

    for overlap, low, high in ((0.0, 2.0, np.inf), (0.25, 0.0, 1.1)):
        out = predict_tiled(field, per_tile_norm, tile_size=64, overlap=overlap)[0]
        grid = TileGrid.plan(field.shape, 64, round(overlap * 64))
        assert low < seam_ratio(out, *tile_edges(grid)) <= high, overlap


def test_seam_ratio_needs_a_boundary_inside_a_2d_image():
    with pytest.raises(DataError, match="No tile boundary"):
        seam_ratio(np.zeros((8, 8)), (), (8,))
    with pytest.raises(DataError, match="2D"):
        seam_ratio(np.zeros((2, 8, 8)), (4,), ())
