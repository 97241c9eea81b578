import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_lightmycells.errors import DataError
from napari_lightmycells.metrics import (
    METRIC_NAMES,
    batch_pearson,
    batch_percentile_normalize,
    batch_psnr,
    batch_ssim,
    compute_metrics,
    cosine_distance,
    euclidean_distance,
    mean_absolute_error,
    pearson,
    percentile_normalize,
    psnr,
    ssim,
)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    target = rng.gamma(2.0, 100.0, size=(96, 80)).astype(np.float32)
    prediction = (0.7 * target + rng.normal(0, 30, size=target.shape)).astype(np.float32)
    return prediction, target


def test_identical_images_are_perfect(pair):
    _, target = pair
    metrics = compute_metrics(target, target)
    assert set(metrics) == set(METRIC_NAMES)
    assert metrics["MAE"] == 0
    assert metrics["E_dist"] == 0
    assert metrics["SSIM"] == pytest.approx(1.0)
    assert metrics["PCC"] == pytest.approx(1.0)
    assert metrics["C_dist"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["PSNR"] == math.inf


def test_percentile_normalisation_matches_challenge_formula(pair):
    _, target = pair
    low, high = np.percentile(target.astype(np.float64), [2, 99.8])
    np.testing.assert_allclose(percentile_normalize(target), (target - low) / (high - low))
    constant = np.full((8, 8), 3.0)
    np.testing.assert_array_equal(percentile_normalize(constant), constant)


def test_batch_percentile_normalisation_matches_the_numpy_one(pair):
    batch = torch.from_numpy(np.stack(pair))[:, None]
    normalised = batch_percentile_normalize(batch)
    for sample, image in zip(normalised, pair):
        np.testing.assert_allclose(sample[0].numpy(), percentile_normalize(image), rtol=1e-4, atol=1e-5)


def test_scores_are_invariant_to_affine_intensity_changes(pair):
    prediction, target = pair
    reference = compute_metrics(prediction, target)
    rescaled = compute_metrics(prediction.astype(np.float64) * 3.5 + 1000, target)
    for name in METRIC_NAMES:
        assert rescaled[name] == pytest.approx(reference[name], rel=1e-9)


def test_constant_offset_without_normalisation():
    target = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    prediction = target + 0.25
    metrics = compute_metrics(prediction, target, normalization="none")
    assert metrics["MAE"] == pytest.approx(0.25)
    assert metrics["E_dist"] == pytest.approx(0.25 * 64)
    assert metrics["PCC"] == pytest.approx(1.0)
    assert metrics["PSNR"] == pytest.approx(10 * np.log10(1 / 0.25**2))
    # with the challenge normalisation an offset disappears entirely
    assert compute_metrics(prediction, target)["MAE"] == pytest.approx(0.0, abs=1e-12)


def test_anticorrelated_images():
    target = np.linspace(0, 1, 50 * 40).reshape(50, 40)
    assert pearson(1 - target, target) == pytest.approx(-1.0)
    assert pearson(np.ones_like(target), target) == 0.0  # constant: challenge counts NaN as 0


def test_against_numpy_scipy_and_skimage(pair):
    prediction, target = (percentile_normalize(x) for x in pair)
    a, b = prediction.ravel(), target.ravel()
    assert mean_absolute_error(prediction, target) == pytest.approx(np.mean(np.abs(a - b)))
    assert euclidean_distance(prediction, target) == pytest.approx(np.linalg.norm(a - b))
    assert cosine_distance(prediction, target) == pytest.approx(
        1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    )
    assert pearson(prediction, target) == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-10)
    assert pearson(prediction, target) == pytest.approx(pearsonr(a, b)[0], rel=1e-10)
    data_range = max(np.ptp(prediction), np.ptp(target))
    assert ssim(prediction, target) == pytest.approx(
        structural_similarity(target, prediction, data_range=data_range)
    )
    assert psnr(prediction, target) == pytest.approx(
        peak_signal_noise_ratio(target, prediction, data_range=np.ptp(target))
    )


def test_ssim_on_tiny_images_and_errors():
    rng = np.random.default_rng(1)
    tiny = rng.random((5, 6))
    assert ssim(tiny, tiny) == pytest.approx(1.0)
    with pytest.raises(DataError, match="at least 3x3"):
        ssim(rng.random((2, 9)), rng.random((2, 9)))
    with pytest.raises(DataError, match="shape"):
        compute_metrics(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(DataError, match="normalisation"):
        compute_metrics(tiny, tiny, normalization="zscore-ish")


def test_torch_batch_metrics_match_numpy(pair):
    prediction, target = (percentile_normalize(x) for x in pair)
    preds = torch.from_numpy(np.stack([prediction, target, 1 - target]))[:, None]
    targets = torch.from_numpy(np.stack([target] * 3))[:, None]
    np.testing.assert_allclose(
        batch_pearson(preds, targets).numpy(), [pearson(prediction, target), 1.0, -1.0], rtol=1e-9
    )
    np.testing.assert_allclose(
        batch_ssim(preds[:1], targets[:1]).numpy(), [ssim(prediction, target)], rtol=1e-7
    )
    assert batch_ssim(preds[1:2], targets[1:2]).item() == pytest.approx(1.0)
    assert batch_psnr(preds[:1], targets[:1]).item() == pytest.approx(psnr(prediction, target))
    assert batch_psnr(preds[1:2], targets[1:2]).item() == math.inf
