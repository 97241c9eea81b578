import itertools
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_lightmycells.errors import DataError, ModelError
from napari_lightmycells.inference.tiling import (
    TileGrid,
    blend_window,
    count_tiles,
    extract_tile,
    plan_tiles,
    predict_grid,
    predict_tiled,
    reflect_indices,
    tile_order,
)

KERNEL = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 5, 5)).astype(np.float32))


def conv5x5(batch: np.ndarray) -> np.ndarray:
    """A fixed 5x5 convolution (receptive radius 2) with mirror padding."""
    x = F.pad(torch.from_numpy(batch), (2, 2, 2, 2), mode="reflect")
    return F.conv2d(x, KERNEL).numpy()


def test_reflect_indices_match_numpy_pad_even_when_repeating():
    for size in (1, 2, 3, 7):
        row = np.arange(size)
        padded = np.pad(row, 20, mode="reflect") if size > 1 else np.zeros(size + 40, int)
        np.testing.assert_array_equal(reflect_indices(-20, size + 40, size), padded)


def test_extract_tile_mirrors_small_images():
    image = np.arange(37 * 41, dtype=np.float32).reshape(37, 41)
    tile = extract_tile(image, -13, -11, 64)
    np.testing.assert_array_equal(tile, np.pad(image, ((13, 14), (11, 12)), mode="reflect"))


def test_blend_window_is_positive_symmetric_and_flat_inside():
    window = blend_window(64, 16)
    assert window.min() > 0 and window.max() == 1
    np.testing.assert_allclose(window, window[::-1])
    assert (window[16:48] == 1).all()


@pytest.mark.parametrize("shape", [(37, 41), (64, 64), (200, 130), (1000, 1333)])
def test_grid_covers_every_pixel_with_positive_weight(shape):
    grid = TileGrid.plan(shape, 128, 16)
    rows, columns = grid.weight_sums()
    assert rows.min() > 0 and columns.min() > 0
    assert grid.ys[0] <= 0 and grid.ys[-1] + 128 >= shape[0]
    assert grid.xs[0] <= 0 and grid.xs[-1] + 128 >= shape[1]
    for starts in (grid.ys, grid.xs):  # neighbours share at least the overlap
        assert all(b - a <= 128 - 16 for a, b in itertools.pairwise(starts))


def test_tiled_equals_whole_image_prediction():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(300, 257)).astype(np.float32)
    whole = conv5x5(image[None, None])[0]
    tiled = predict_tiled(image, conv5x5, tile_size=64, overlap=0.25, batch_size=3)
    assert tiled.shape == (1, 300, 257) and tiled.dtype == np.float32
    # only the few pixels within 2 px of a tile edge differ, and they carry a tiny blending weight
    np.testing.assert_allclose(tiled, whole, atol=5e-3 * np.abs(whole).max())
    assert np.median(np.abs(tiled - whole)) < 1e-5


@pytest.mark.parametrize("shape", [(37, 41), (1000, 1333)])
def test_odd_sizes(shape):
    image = np.random.default_rng(2).random(shape, dtype=np.float32)
    output = predict_tiled(image, lambda t: np.concatenate([t, -t], axis=1), tile_size=128, batch_size=8)
    assert output.shape == (2, *shape)
    np.testing.assert_allclose(output[0], image, atol=1e-5)
    np.testing.assert_allclose(output[1], -image, atol=1e-5)


def test_no_seams_with_a_position_dependent_model():
    tile = 64
    image = np.tile(np.linspace(0, 1, 300, dtype=np.float32), (300, 1))
    bias = np.linspace(-0.1, 0.1, tile, dtype=np.float32)

    def shifted(batch):  # every tile disagrees with its neighbours by up to 0.2 at the borders
        return batch + bias[None, None, None, :]

    output = predict_tiled(image, shifted, tile_size=tile, overlap=0.25)[0]
    grid = TileGrid.plan(image.shape, tile, 16)
    borders = sorted({x + e for x in grid.xs for e in (0, tile) if 0 < x + e < 300})
    curvature = np.abs(np.diff(output, n=2, axis=1)).max(axis=0)
    hard_seam = 0.2  # what cutting tiles without blending would give
    assert curvature[[b - 1 for b in borders]].max() < hard_seam / 10
    assert curvature.max() < hard_seam / 10


def test_memory_is_bounded_by_the_output_and_one_batch():
    shape, tile, batch = (1536, 1536), 128, 4
    image = np.zeros(shape, dtype=np.float32)
    image[::7] = 1
    tracemalloc.start()
    predict_tiled(image, lambda t: t * 2, tile_size=tile, batch_size=batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    output_bytes = image.nbytes
    batch_bytes = 4 * batch * tile * tile * 4  # tiles, outputs and temporaries of one batch
    assert peak < output_bytes + batch_bytes + 1_000_000
    assert count_tiles(shape, tile) > 100  # many tiles, never all in memory


def test_invalid_arguments():
    image = np.ones((10, 10), dtype=np.float32)
    with pytest.raises(DataError, match="overlap"):
        predict_tiled(image, lambda t: t, 64, overlap=0.9)
    with pytest.raises(DataError, match="2D"):
        predict_tiled(np.ones((2, 10, 10)), lambda t: t, 64)
    with pytest.raises(ModelError, match="shape"):
        predict_tiled(image, lambda t: t[:, :, :32], 64)


def test_progress_hook_sees_every_batch():
    calls = []
    predict_tiled(
        np.ones((300, 300), np.float32),
        lambda t: t,
        64,
        batch_size=4,
        on_batch=lambda d, n, regions: calls.append((d, n)),
    )
    total = count_tiles((300, 300), 64)
    assert calls[-1] == (total, total)
    assert len(calls) == -(-total // 4)


def test_plan_tiles_grows_tiles_when_that_computes_fewer_pixels():
    grid = plan_tiles((2048, 2048), 1024, 16, overlap=0.125)
    assert (grid.tile, len(grid)) == (1152, 4)  # 1024 px tiles would need 3x3
    assert grid.computed_pixels() < 0.6 * TileGrid.plan((2048, 2048), 1024, 128).computed_pixels()
    neighbours = np.diff(grid.ys)
    assert grid.tile - neighbours.max() >= 128  # the minimum overlap is kept
    assert plan_tiles((1024, 1344), 1024, 16, 0.125).tile == 1024  # 2 tiles already: growing would cost more
    default = plan_tiles((2048, 2048), 1024, 16)  # BiaPy's context: 400 px shared by neighbours
    assert default.overlap == 400 and (default.tile, len(default)) == (1088, 9)  # 1024 px tiles need 4x4
    assert plan_tiles((2048, 2048), 1024, 16, max_growth=1.0).tile == 1024
    assert plan_tiles((500, 500), 100, 16).tile % 16 == 0


def test_tiles_nearest_the_focus_run_first():
    grid = TileGrid.plan((512, 512), 128, 0)
    order = tile_order(grid, focus=(500, 10))
    assert order[0] == (384, 0) and set(order) == set(grid) and tile_order(grid)[0] == (0, 0)


def test_lazy_input_and_output_arrays_are_read_and_written_tile_by_tile():
    zarr = pytest.importorskip("zarr")
    image = np.random.default_rng(1).random((300, 260), dtype=np.float32)
    lazy = zarr.create_array(store={}, shape=image.shape, chunks=(64, 64), dtype="float32")
    lazy[:] = image
    out = zarr.create_array(store={}, shape=image.shape, chunks=(64, 64), dtype="float32", fill_value=0)
    grid = TileGrid.plan(image.shape, 64, 16)
    done = []
    predict_grid(
        lazy, conv5x5, grid, batch_size=2, out=out, on_batch=lambda d, n, regions: done.extend(regions)
    )
    expected = predict_grid(image, conv5x5, grid, batch_size=2)[0]
    np.testing.assert_allclose(out[:], expected, rtol=1e-5, atol=1e-5)
    assert len(done) == len(grid) and all(y1 - y0 <= 64 and x1 - x0 <= 64 for y0, y1, x0, x1 in done)


def test_a_finished_tile_centre_is_final_before_the_others_run():
    image = np.random.default_rng(2).random((256, 256), dtype=np.float32)
    grid = TileGrid.plan(image.shape, 128, 32)
    expected = predict_grid(image, conv5x5, grid)[0]
    out = np.zeros(image.shape, np.float32)

    def stop_after_first(done, total, regions):
        raise StopIteration

    with pytest.raises(StopIteration):
        predict_grid(image, conv5x5, grid, out=out, on_batch=stop_after_first)
    np.testing.assert_allclose(out[:60, :60], expected[:60, :60], rtol=1e-5, atol=1e-6)  # no other tile there
    assert not out[150:, 150:].any()


def test_the_focus_tile_runs_alone_in_the_first_batch():
    image = np.random.default_rng(3).random((256, 256), dtype=np.float32)
    grid = TileGrid.plan(image.shape, 64, 16)
    batches = []
    out = predict_grid(
        image, conv5x5, grid, batch_size=4, focus=(250, 250), on_batch=lambda d, n, r: batches.append((d, r))
    )
    counts = [done for done, _ in batches]
    assert counts == [*range(1, len(grid), 4), len(grid)]
    assert batches[0][1] == [(200, 256, 200, 256)]  # the bottom-right tile alone
    np.testing.assert_allclose(out, predict_grid(image, conv5x5, grid, batch_size=4), rtol=1e-5, atol=1e-6)
