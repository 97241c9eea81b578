import numpy as np
import pytest

from napari_lightmycells.widgets._texture import upload_region

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer(show=True)  # a hidden canvas is not redrawn


def canvas_pixels(viewer, qtbot):
    qtbot.wait(50)
    return viewer.screenshot(canvas_only=True, flash=False)


def test_uploading_a_region_shows_what_a_full_refresh_shows(viewer, qtbot):
    data = np.zeros((96, 128), np.float32)
    layer = viewer.add_image(data, contrast_limits=(0, 1))
    blank = canvas_pixels(viewer, qtbot)
    data[16:48, 32:96] = np.random.default_rng(0).random((32, 64), np.float32)
    region = (slice(16, 48), slice(32, 96))

    assert upload_region(viewer, layer, region)
    partial = canvas_pixels(viewer, qtbot)
    layer.refresh()
    full = canvas_pixels(viewer, qtbot)
    assert not np.array_equal(partial, blank)
    np.testing.assert_array_equal(partial, full)


def test_a_plane_not_on_screen_needs_no_upload_and_the_one_on_screen_is_uploaded(viewer, qtbot):
    data = np.zeros((3, 64, 64), np.float32)
    layer = viewer.add_image(data, contrast_limits=(0, 1))
    viewer.dims.set_current_step(0, 1)
    blank = canvas_pixels(viewer, qtbot)
    data[0] = data[2] = 1.0

    assert upload_region(viewer, layer, (0, slice(0, 64), slice(0, 64)))
    np.testing.assert_array_equal(canvas_pixels(viewer, qtbot), blank)
    data[1, :32] = 1.0
    assert upload_region(viewer, layer, (1, slice(0, 32), slice(0, 64)))
    assert not np.array_equal(canvas_pixels(viewer, qtbot), blank)


@pytest.mark.parametrize("case", ["hidden", "3D view", "not numpy", "not in the viewer"])
def test_cases_it_cannot_handle_are_left_to_a_refresh(viewer, case):
    data = np.zeros((8, 32, 32), np.float32)
    if case == "not numpy":
        import dask.array as da

        data = da.zeros((8, 32, 32), dtype=np.float32, chunks=(1, 32, 32))
    layer = viewer.add_image(data)
    if case == "hidden":
        layer.visible = False
    if case == "3D view":
        viewer.dims.ndisplay = 3
    if case == "not in the viewer":
        viewer.layers.remove(layer)
    assert not upload_region(viewer, layer, (0, slice(0, 8), slice(0, 8)))
