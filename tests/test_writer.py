import numpy as np
import pytest
from napari.layers import Image

from napari_lightmycells._writer import write_image_layer
from napari_lightmycells.data.io import read_image
from napari_lightmycells.errors import DataError


def test_prediction_is_float32_ome_tiff_with_layer_scale(tmp_path):
    layer = Image(
        np.random.rand(16, 16) * 100,
        scale=(0.5, 0.25),
        name="cells Nucleus",
        metadata={"organelle": "Nucleus"},
    )
    data, meta, _ = layer.as_layer_data_tuple()
    [written] = write_image_layer(str(tmp_path / "pred"), data, meta)
    assert written.endswith("pred.ome.tiff")
    image = read_image(written)
    assert image.data.dtype == np.float32
    np.testing.assert_allclose(image.data, layer.data.astype(np.float32))
    assert image.pixel_size == pytest.approx((0.5, 0.25))
    assert image.channel_names == ("Nucleus",)


def test_stack_keeps_z_step(tmp_path):
    layer = Image(np.random.rand(3, 8, 8), scale=(2.0, 0.5, 0.5))
    [written] = write_image_layer(str(tmp_path / "stack.tif"), *layer.as_layer_data_tuple()[:2])
    image = read_image(written)
    assert image.data.shape == (3, 8, 8) and image.z_step == pytest.approx(2.0)


def test_rgb_layers_are_refused(tmp_path):
    layer = Image(np.zeros((8, 8, 3), np.uint8), rgb=True)
    with pytest.raises(DataError, match="RGB"):
        write_image_layer(str(tmp_path / "rgb.tif"), *layer.as_layer_data_tuple()[:2])
