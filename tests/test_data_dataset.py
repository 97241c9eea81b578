"""Paired and unlabelled datasets, mirror padding, normalisation and the split by case."""

import numpy as np
import pytest
import torch

from napari_lightmycells.data.dataset import (
    PairedDataset,
    UnlabelledDataset,
    mirror_pad,
    split_cases,
    tile_origins,
)
from napari_lightmycells.data.io import read_image, write_ome_tiff
from napari_lightmycells.data.normalize import compute_stats, denormalize, normalize, to_uint8
from napari_lightmycells.data.study import Case, discover_study
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.errors import DataError


@pytest.fixture
def study(tmp_path):
    make_synthetic_study(tmp_path, n_cases=4, size=64, n_planes=3, modalities=("BF", "PC"))
    return discover_study(tmp_path, organelle="Nucleus")


def _cases(n):
    return [Case(str(i), "BF", []) for i in range(n)]


def test_split_is_by_case_deterministic_and_leak_free():
    cases = _cases(50)
    train, val = split_cases(cases, 0.1, seed=1)
    assert len(val) == 5 and len(train) == 45
    assert not {c.case_id for c in train} & {c.case_id for c in val}
    assert {c.case_id for c in train} | {c.case_id for c in val} == {c.case_id for c in cases}
    assert split_cases(cases, 0.1, seed=1) == (train, val)
    assert split_cases(cases, 0.1, seed=2)[1] != val
    assert len(split_cases(_cases(3), 0.1)[1]) == 1  # at least one validation case
    assert split_cases(_cases(3), 0.0)[1] == []
    with pytest.raises(DataError, match="not unique"):
        split_cases(_cases(2) + _cases(1), 0.5)


def test_mirror_pad_reflects_and_repeats_for_tiny_images():
    image = np.arange(12).reshape(3, 4)
    padded = mirror_pad(image, 5, 4)
    np.testing.assert_array_equal(padded, np.pad(image, ((1, 1), (0, 0)), mode="reflect"))
    np.testing.assert_array_equal(padded[:, 0], [4, 0, 4, 8, 4])  # reflect excludes the edge pixel
    tiny = np.random.default_rng(0).random((10, 10))
    big = mirror_pad(tiny, 64, 64)
    assert big.shape == (64, 64)
    np.testing.assert_array_equal(big[27:37, 27:37], tiny)  # centred
    assert set(np.unique(big)) <= set(np.unique(tiny))
    assert mirror_pad(tiny, 8, 8) is tiny


def test_tile_origins_cover_the_image():
    assert tile_origins(100, 100) == [0]
    assert tile_origins(50, 100) == [0]
    assert tile_origins(250, 100) == [0, 100, 150]


def test_normalize_then_denormalize_is_the_identity():
    image = np.random.default_rng(0).integers(0, 60000, (32, 32)).astype(np.uint16)
    for method in ("zscore", "percentile"):
        normed, stats = normalize(image, method)
        np.testing.assert_allclose(denormalize(normed, stats), image, rtol=1e-5, atol=0.05)
        np.testing.assert_allclose(
            denormalize(torch.from_numpy(normed), stats).numpy(), image, rtol=1e-5, atol=0.05
        )


def test_zscore_statistics_of_float32_images_are_accumulated_in_float64():
    image = np.random.default_rng(2).random((300, 200), dtype=np.float32) * 1000 + 1e4
    stats = compute_stats(image)
    exact = image.astype(np.float64)
    assert (stats.offset, stats.scale) == pytest.approx((exact.mean(), exact.std()), rel=1e-12)
    with pytest.raises(DataError, match="NaN or infinite"):
        compute_stats(np.array([[1.0, np.inf]], np.float32))


def test_percentile_normalisation_and_display_use_the_challenge_percentiles():
    image = np.random.default_rng(1).gamma(2.0, 100.0, (64, 64))
    low, high = np.percentile(image, [2, 99.8])
    stats = compute_stats(image, "percentile")
    assert (stats.offset, stats.scale) == pytest.approx((low, high - low))
    display = to_uint8(image)
    assert display.dtype == np.uint8
    assert (display[image <= low] == 0).all() and (display[image >= high] == 255).all()
    assert display[(image > low * 1.5) & (image < high / 1.5)].min() > 0
    assert not to_uint8(np.full((4, 4), 7.0)).any()


def test_training_samples_are_normalised_patches(study):
    dataset = PairedDataset(study.cases, "Nucleus", crop_size=32)
    assert len(dataset) == 4
    torch.manual_seed(0)
    image, target = dataset[0]
    assert image.shape == target.shape == (1, 32, 32)
    assert image.dtype == target.dtype == torch.float32
    # Whole-image statistics applied to the crop: a full-size crop has zero mean, unit std.
    full_image, full_target = PairedDataset(study.cases, "Nucleus", crop_size=64)[1]
    assert abs(full_image.mean()) < 1e-4 and abs(full_image.std(unbiased=False) - 1) < 1e-4
    assert abs(full_target.mean()) < 1e-4


def test_crops_of_input_and_target_are_aligned(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(100, 5000, (40, 48)).astype(np.uint16)
    write_ome_tiff(tmp_path / "image_1_BF_z0.ome.tiff", base)
    write_ome_tiff(tmp_path / "image_1_Actin.ome.tiff", (base * 3 + 7).astype(np.uint16))
    dataset = PairedDataset(discover_study(tmp_path).cases, "Actin", crop_size=16, samples_per_case=5)
    for index in range(len(dataset)):
        image, target = dataset[index]
        torch.testing.assert_close(image, target, atol=1e-4, rtol=1e-4)  # same image after z-score


def test_random_plane_is_picked_each_time(study):
    dataset = PairedDataset(study.cases[:1], "Nucleus", crop_size=64, samples_per_case=1)
    torch.manual_seed(0)
    planes = {dataset._train_plane(dataset.cases[0]).path.name for _ in range(30)}
    assert len(planes) == 3
    best = PairedDataset(study.cases[:1], "Nucleus", crop_size=64, focus="best")
    assert {best._train_plane(best.cases[0]).path.name for _ in range(5)} == {"image_1_BF_z1.ome.tiff"}


def test_validation_yields_every_plane_deterministically(study):
    dataset = PairedDataset(study.cases, "Nucleus", crop_size=48, mode="val")
    assert len(dataset) == 4 * 3 * 4  # cases x planes x 2x2 tiles
    first = dataset[5]
    torch.testing.assert_close(dataset[5], first)
    plane = read_image(study.cases[0].inputs[1]).data
    expected, _ = normalize(plane)
    torch.testing.assert_close(dataset[4 + 3][0][0], torch.from_numpy(expected[16:64, 16:64]))


def test_small_images_are_mirror_padded_to_the_crop(tmp_path):
    image = np.random.default_rng(0).integers(1, 1000, (10, 10)).astype(np.uint16)
    write_ome_tiff(tmp_path / "image_1_BF_z0.ome.tiff", image)
    write_ome_tiff(tmp_path / "image_1_Nucleus.ome.tiff", image)
    cases = discover_study(tmp_path).cases
    x, y = PairedDataset(cases, "Nucleus", crop_size=64)[0]
    assert x.shape == (1, 64, 64)
    normed, _ = normalize(image)
    np.testing.assert_allclose(x[0].numpy(), mirror_pad(normed, 64, 64), atol=1e-5)
    torch.testing.assert_close(x, y)


def test_dataset_errors_name_the_file(tmp_path):
    write_ome_tiff(tmp_path / "image_1_BF_z0.ome.tiff", np.arange(64, dtype=np.uint16).reshape(8, 8))
    write_ome_tiff(tmp_path / "image_1_Nucleus.ome.tiff", np.zeros((8, 8), np.uint16))
    write_ome_tiff(tmp_path / "image_2_BF_z0.ome.tiff", np.arange(64, dtype=np.uint16).reshape(8, 8))
    write_ome_tiff(tmp_path / "image_2_Nucleus.ome.tiff", np.arange(80, dtype=np.uint16).reshape(8, 10))
    cases = discover_study(tmp_path).cases
    dataset = PairedDataset(cases, "Nucleus", crop_size=8, mode="val")
    with pytest.raises(DataError, match=r"image_1_Nucleus.ome.tiff is constant"):
        dataset[0]
    with pytest.raises(DataError, match=r"Shapes disagree in case 2"):
        dataset[1]
    with pytest.raises(DataError, match="have no Actin target"):
        PairedDataset(cases, "Actin")


def test_unlabelled_dataset_uses_every_plane_and_modality(study):
    dataset = UnlabelledDataset(study.cases, crop_size=32)
    assert len(dataset) == 12
    assert {plane.path.name.split("_")[2] for plane in dataset.planes} == {"BF", "PC"}
    assert dataset[3].shape == (1, 32, 32)


def test_works_with_dataloader_workers(study):
    loader = torch.utils.data.DataLoader(
        PairedDataset(study.cases, "Nucleus", crop_size=32), batch_size=2, num_workers=2
    )
    batches = list(loader)
    assert [tuple(b[0].shape) for b in batches] == [(2, 1, 32, 32), (2, 1, 32, 32)]
