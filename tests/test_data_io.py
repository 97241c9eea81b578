"""Reading and writing TIFF/OME-TIFF images with their metadata."""

import numpy as np
import pytest
import tifffile

from napari_lightmycells.data.io import (
    modality_from_name,
    read_image,
    read_shape,
    strip_tiff_suffix,
    write_ome_tiff,
    write_prediction,
)
from napari_lightmycells.errors import DataError


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(20, 30), (4, 20, 30)])
def test_ome_round_trip_keeps_data_and_metadata(tmp_path, dtype, shape):
    data = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    path = write_ome_tiff(
        tmp_path / "image.ome.tiff",
        data,
        pixel_size=(0.5, 0.25),
        z_step=2.0,
        channel_names=["BF"],
        modality="PC",
    )
    image = read_image(path)
    np.testing.assert_array_equal(image.data, data)
    assert image.data.dtype == dtype
    assert image.axes == ("YX" if len(shape) == 2 else "ZYX")
    assert image.pixel_size == pytest.approx((0.5, 0.25))
    assert image.z_step == (pytest.approx(2.0) if len(shape) == 3 else None)
    assert image.channel_names == ("BF",)
    assert image.modality == "PC"
    assert image.name == "image"


def test_prediction_is_float32_with_input_pixel_size(tmp_path):
    write_ome_tiff(tmp_path / "in.ome.tiff", np.ones((8, 8), np.uint16), pixel_size=(0.3, 0.3))
    reference = read_image(tmp_path / "in.ome.tiff")
    write_prediction(tmp_path / "pred.ome.tiff", np.arange(64).reshape(8, 8), reference, "Nucleus")
    prediction = read_image(tmp_path / "pred.ome.tiff")
    assert prediction.data.dtype == np.float32
    assert prediction.pixel_size == pytest.approx((0.3, 0.3))
    assert prediction.channel_names == ("Nucleus",)


def test_pixel_size_units_are_converted_to_micrometres(tmp_path):
    meta = {
        "axes": "YX",
        "PhysicalSizeX": 250,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 500,
        "PhysicalSizeYUnit": "nm",
    }
    tifffile.imwrite(tmp_path / "a.ome.tif", np.zeros((4, 4), np.uint8), ome=True, metadata=meta)
    assert read_image(tmp_path / "a.ome.tif").pixel_size == pytest.approx((0.5, 0.25))


def test_plain_tiff_imagej_metadata_and_description_modality(tmp_path):
    data = np.arange(3 * 10 * 12, dtype=np.uint16).reshape(3, 10, 12)
    tifffile.imwrite(
        tmp_path / "stack.tif",
        data,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.4),
        metadata={"unit": "um", "spacing": 1.5, "axes": "ZYX"},
    )
    image = read_image(tmp_path / "stack.tif")
    assert image.axes == "ZYX" and image.data.shape == (3, 10, 12)
    assert image.pixel_size == pytest.approx((0.4, 0.2))
    assert image.z_step == pytest.approx(1.5)

    tifffile.imwrite(tmp_path / "plain.tif", data[0], description="modality=DIC")
    plain = read_image(tmp_path / "plain.tif")
    assert plain.modality == "DIC" and plain.pixel_size is None


def test_modality_from_file_name():
    assert modality_from_name("image_12_BF_z0.ome.tiff") == "BF"
    assert modality_from_name("cells-DIC.tif") == "DIC"
    assert modality_from_name("PCR_sample.tif") is None
    assert strip_tiff_suffix("a.b.ome.tiff") == "a.b"


def test_singleton_axes_are_squeezed(tmp_path):
    data = np.random.default_rng(0).random((1, 1, 5, 16, 16)).astype(np.float32)
    tifffile.imwrite(tmp_path / "t.ome.tiff", data, ome=True, metadata={"axes": "TCZYX"})
    image = read_image(tmp_path / "t.ome.tiff")
    assert image.axes == "ZYX" and image.data.shape == (5, 16, 16)
    assert read_shape(tmp_path / "t.ome.tiff") == (5, 16, 16)
    tifffile.imwrite(tmp_path / "u.ome.tiff", data[:, :, :1], ome=True, metadata={"axes": "TCZYX"})
    assert read_image(tmp_path / "u.ome.tiff").data.shape == (16, 16)


def test_too_many_dimensions_and_rgb_are_rejected(tmp_path):
    tifffile.imwrite(
        tmp_path / "4d.ome.tiff", np.zeros((2, 3, 8, 8), np.uint8), ome=True, metadata={"axes": "CZYX"}
    )
    with pytest.raises(DataError, match=r"4d.ome.tiff has more than 3 non-singleton dimensions"):
        read_image(tmp_path / "4d.ome.tiff")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(DataError, match=r"rgb.tif is an RGB.*grayscale"):
        read_image(tmp_path / "rgb.tif")


def test_corrupt_and_missing_files_raise_readable_errors(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage-not-a-tiff")
    with pytest.raises(DataError, match=r"Cannot read broken.tif: .*not a valid TIFF"):
        read_image(tmp_path / "broken.tif")
    with pytest.raises(DataError, match=r"not found"):
        read_image(tmp_path / "missing.tif")


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.ome.tiff"
    original = np.full((8, 8), 7, np.uint16)
    write_ome_tiff(path, original)

    def failing_write(*args, **kwargs):
        with open(args[0], "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_ome_tiff(path, np.zeros((8, 8), np.uint16))
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(path).data, original)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.ome.tiff"]


def test_write_rejects_bad_shapes(tmp_path):
    with pytest.raises(DataError, match="expected a non-empty 2D or 3D array"):
        write_ome_tiff(tmp_path / "x.ome.tiff", np.zeros((2, 2, 4, 4)))


def test_image_over_the_memory_budget_is_refused_before_reading(tmp_path, monkeypatch):
    """A valid sparse 60000² uint16 TIFF (6.7 GiB of pixels) is refused from its header, with its size."""
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, shape=(60000, 60000), dtype="uint16")  # header only: a sparse file
    monkeypatch.setenv("LIGHTMYCELLS_MAX_IMAGE_GIB", "2")
    read = []
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", lambda *a, **k: read.append(1))
    with pytest.raises(DataError, match=r"60000x60000 uint16 pixels take 6\.7 GiB, over the 2\.0 GiB budget"):
        read_image(path)
    assert not read


def test_budget_defaults_to_a_fraction_of_available_memory(tmp_path, monkeypatch):
    from napari_lightmycells import memory

    path = write_ome_tiff(tmp_path / "a.ome.tiff", np.ones((64, 64), np.uint16))  # 8 KiB
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    monkeypatch.setattr(memory, "available_memory", lambda: 8192 / memory.AVAILABLE_FRACTION - 1)
    with pytest.raises(DataError, match="available"):
        read_image(path)
    monkeypatch.setattr(memory, "available_memory", lambda: 8192 / memory.AVAILABLE_FRACTION)
    assert read_image(path).data.shape == (64, 64)


def test_memory_error_is_not_reported_as_a_damaged_file(tmp_path, monkeypatch):
    path = write_ome_tiff(tmp_path / "a.ome.tiff", np.ones((64, 64), np.uint16))

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", out_of_memory)
    with pytest.raises(DataError, match="Not enough memory to read a.ome.tiff") as info:
        read_image(path)
    assert "damaged" not in str(info.value)


def test_available_memory_is_known_here():
    from napari_lightmycells.memory import available_memory

    assert 0 < available_memory() < 2**50
