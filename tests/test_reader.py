import numpy as np
import pytest
from npe2 import PluginManifest

from napari_lightmycells._reader import get_reader
from napari_lightmycells.data.io import write_ome_tiff
from napari_lightmycells.errors import DataError


def test_manifest_is_valid_and_importable():
    manifest = PluginManifest.from_distribution("napari-lightmycells")
    manifest.validate_imports()
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == [
        "Predict organelles",
        "Fine-tune organelle model",
        "Pretrain encoder (MAE)",
    ]
    assert [s.key for s in contributions.sample_data] == ["synthetic_case", "real_phase_contrast_case"]
    assert contributions.readers and contributions.writers


def test_non_tiff_paths_are_declined(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path)) is None  # a folder without TIFF files


def test_single_plane_is_named_by_case_modality_and_plane(synthetic_study):
    path = str(synthetic_study / "image_1_BF_z2.ome.tiff")
    [(data, kwargs, kind)] = get_reader(path)(path)
    assert kind == "image" and data.shape == (96, 96)
    assert kwargs["name"] == "image_1 BF z2"
    assert kwargs["scale"] == pytest.approx((0.325, 0.325))
    assert kwargs["metadata"]["modality"] == "BF"


def test_folder_gives_one_z_stack_and_a_coloured_target(synthetic_study):
    layers = get_reader(str(synthetic_study))(str(synthetic_study))
    (stack, stack_kwargs, _), (_, target_kwargs, _) = layers
    assert stack.shape == (3, 96, 96) and stack_kwargs["name"] == "image_1 BF (z-stack)"
    assert stack_kwargs["scale"] == pytest.approx((1.0, 0.325, 0.325))
    assert stack_kwargs["metadata"]["axes"] == "ZYX"
    assert target_kwargs["name"] == "image_1 Nucleus"
    assert target_kwargs["colormap"] == "blue" and target_kwargs["blending"] == "additive"


def test_z_stack_file_keeps_its_z_step(tmp_path):
    path = write_ome_tiff(
        tmp_path / "cells_PC.ome.tiff",
        np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8),
        pixel_size=(0.5, 0.25),
        z_step=2.0,
        modality="PC",
    )
    [(data, kwargs, _)] = get_reader(str(path))(str(path))
    assert data.shape == (2, 8, 8)
    assert kwargs["name"] == "cells PC (z-stack)"
    assert kwargs["scale"] == pytest.approx((2.0, 0.5, 0.25))


def test_unreadable_file_raises_a_data_error(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"not a tiff")
    with pytest.raises(DataError, match="not a valid TIFF"):
        get_reader(str(path))(str(path))
