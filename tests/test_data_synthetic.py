"""Synthetic LightMyCells-style study generator."""

import time

import numpy as np
from scipy import ndimage

from napari_lightmycells.constants import ORGANELLES
from napari_lightmycells.data.focus import best_focus_index
from napari_lightmycells.data.io import read_image
from napari_lightmycells.data.synthetic import PIXEL_SIZE_UM, make_synthetic_study


def test_writes_lightmycells_files_fast(tmp_path):
    start = time.perf_counter()
    folder = make_synthetic_study(tmp_path, n_cases=6, size=128, n_planes=3)
    assert time.perf_counter() - start < 1.0
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 6 * 4
    assert "image_1_BF_z0.ome.tiff" in names and "image_6_Nucleus.ome.tiff" in names
    image = read_image(folder / "image_1_BF_z2.ome.tiff")
    assert image.data.dtype == np.uint16 and image.data.shape == (128, 128)
    assert image.pixel_size == PIXEL_SIZE_UM and image.modality == "BF"


def test_is_deterministic_for_a_seed(tmp_path):
    a = make_synthetic_study(tmp_path / "a", n_cases=2, seed=3)
    b = make_synthetic_study(tmp_path / "b", n_cases=2, seed=3)
    for name in ("image_2_BF_z1.ome.tiff", "image_2_Nucleus.ome.tiff"):
        np.testing.assert_array_equal(read_image(a / name).data, read_image(b / name).data)


def test_middle_plane_is_in_focus(tmp_path):
    folder = make_synthetic_study(tmp_path, n_cases=1, n_planes=5, modalities=("PC",))
    planes = [read_image(folder / f"image_1_PC_z{z}.ome.tiff").data for z in range(5)]
    assert best_focus_index(planes) == 2


def test_targets_are_a_function_of_the_input_structure(tmp_path):
    folder = make_synthetic_study(tmp_path, n_cases=1, size=96, organelles=ORGANELLES, modalities=("BF",))
    bf = read_image(folder / "image_1_BF_z1.ome.tiff").data.astype(float)
    nucleus = read_image(folder / "image_1_Nucleus.ome.tiff").data.astype(float)
    # In brightfield, thicker (darker) regions are nuclei: a smoothed inverted input predicts the target.
    smoothed = ndimage.gaussian_filter(-bf, 1.0)
    assert np.corrcoef(smoothed.ravel(), nucleus.ravel())[0, 1] > 0.5
    assert all((folder / f"image_1_{organelle}.ome.tiff").exists() for organelle in ORGANELLES)


def test_nested_studies_and_modalities(tmp_path):
    folder = make_synthetic_study(tmp_path, n_cases=4, modalities=("BF", "DIC"), n_studies=2)
    assert (folder / "Study_1" / "image_1_BF_z0.ome.tiff").exists()
    assert (folder / "Study_2" / "image_2_DIC_z0.ome.tiff").exists()
