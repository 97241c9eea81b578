"""Best-focus plane selection."""

import numpy as np
import pytest
from scipy import ndimage

from napari_lightmycells.data.focus import best_focus_index, best_focus_plane, blur_scores
from napari_lightmycells.errors import DataError


@pytest.fixture
def stack():
    sharp = np.random.default_rng(0).random((64, 64))
    return np.stack([ndimage.gaussian_filter(sharp, sigma) for sigma in (3.0, 2.0, 0.3, 1.0)])


def test_least_blurry_plane_is_selected(stack):
    scores = blur_scores(stack)
    assert scores.shape == (4,) and np.argmin(scores) == 2
    assert best_focus_index(stack) == 2
    assert best_focus_index(list(stack)) == 2
    np.testing.assert_array_equal(best_focus_plane(stack), stack[2])


def test_a_2d_image_is_its_own_best_focus(stack):
    assert best_focus_index(stack[0]) == 0
    plane = stack[0]
    assert best_focus_plane(plane) is plane


def test_invalid_input_raises():
    with pytest.raises(DataError, match="Z-stack"):
        blur_scores([])
