"""Image-similarity metrics of the LightMyCells challenge, plus PSNR.

The challenge's evaluation container (``evaluation.py`` of the France-BioImaging LightMyCells
grand-challenge) scores every prediction/ground-truth pair as follows:

1. Both images are percentile-normalised **independently**: ``(x - p2) / (p99.8 - p2)`` with
   ``np.percentile`` over all pixels, no clipping; an image whose two percentiles are equal is left
   unchanged.
2. ``PCC``: ``scipy.stats.pearsonr`` of the flattened images (NaN, i.e. a constant image, counts as 0).
3. ``SSIM``: ``skimage.metrics.structural_similarity`` with default settings (7x7 uniform window,
   sample covariance) and ``data_range = max(range(prediction), range(target))`` after normalisation.
4. ``MAE``: mean absolute difference (the metric; the masked-autoencoder model lives in ``models.mae``); ``E_dist``: Euclidean distance of the flattened images;
   ``C_dist``: ``|1 - cosine similarity|`` of the flattened images (sklearn semantics: a zero vector has
   similarity 0).  These three are only reported for Nucleus and Mitochondria (see
   :data:`CHALLENGE_METRICS`); we compute them for every organelle.

Because of step 1 every challenge metric is invariant to a positive affine change of the
prediction's intensities, so how predictions are denormalised does not change the scores.
``PSNR`` (not a challenge metric, used in the paper's tables) is ``10 log10(data_range² / MSE)`` with
``data_range`` the target's range; identical images give ``inf``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from .constants import CHALLENGE_PERCENTILES
from .errors import DataError

METRIC_NAMES = ("MAE", "SSIM", "PCC", "E_dist", "C_dist", "PSNR")
CHALLENGE_METRICS = {
    "Nucleus": ("MAE", "PCC", "SSIM", "E_dist", "C_dist"),
    "Mitochondria": ("MAE", "PCC", "SSIM", "E_dist", "C_dist"),
    "Tubulin": ("PCC", "SSIM"),
    "Actin": ("PCC", "SSIM"),
}
# Higher is better for these; lower is better for the others.
HIGHER_IS_BETTER = frozenset({"SSIM", "PCC", "PSNR"})
NORMALIZATIONS = ("percentile", "none")


def percentile_normalize(image: np.ndarray) -> np.ndarray:
    """``(x - p2) / (p99.8 - p2)`` (:data:`CHALLENGE_PERCENTILES`) in float64, unclipped; unchanged when
    the two percentiles are equal."""
    values = np.asarray(image, dtype=np.float64)
    p_low, p_high = np.percentile(values, CHALLENGE_PERCENTILES)
    if p_high == p_low:
        return values
    return (values - p_low) / (p_high - p_low)


def mean_absolute_error(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error."""
    a, b = _pair(prediction, target)
    return float(np.mean(np.abs(a - b)))


def euclidean_distance(prediction: np.ndarray, target: np.ndarray) -> float:
    """Euclidean (L2) distance between the flattened images."""
    a, b = _pair(prediction, target)
    return float(math.sqrt(np.sum(np.square(a - b))))


def cosine_distance(prediction: np.ndarray, target: np.ndarray) -> float:
    """``|1 - cos(angle)|`` between the flattened images (a zero image has similarity 0)."""
    a, b = _pair(prediction, target)
    norms = math.sqrt(float(np.dot(a, a))) * math.sqrt(float(np.dot(b, b)))
    similarity = float(np.dot(a, b)) / norms if norms > 0 else 0.0
    return abs(1.0 - similarity)


def pearson(prediction: np.ndarray, target: np.ndarray) -> float:
    """Pearson correlation of the flattened images; 0 when either image is constant."""
    a, b = _pair(prediction, target)
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if denominator == 0:
        return 0.0
    return float(np.clip(float(np.dot(a, b)) / denominator, -1.0, 1.0))


def ssim(prediction: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """Structural similarity (skimage defaults); ``data_range`` defaults to the larger of the two ranges."""
    a, b = _pair(prediction, target, flatten=False)
    if data_range is None:
        data_range = max(np.ptp(a), np.ptp(b))
    if data_range == 0:  # both images constant
        return 1.0 if np.array_equal(a, b) else 0.0
    win_size = min(7, *(side if side % 2 else side - 1 for side in a.shape))
    if win_size < 3:
        raise DataError(f"SSIM needs images of at least 3x3 pixels, got {a.shape}.")
    return float(structural_similarity(b, a, data_range=data_range, win_size=win_size))


def psnr(prediction: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``data_range`` defaults to the target's range (inf if identical)."""
    a, b = _pair(prediction, target)
    if data_range is None:
        data_range = float(np.ptp(b))
    mse = float(np.mean(np.square(a - b)))
    if mse == 0:
        return math.inf
    if data_range == 0:
        return -math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def compute_metrics(
    prediction: np.ndarray, target: np.ndarray, normalization: str = "percentile"
) -> dict[str, float]:
    """All :data:`METRIC_NAMES` for one image pair, the challenge way (``normalization="percentile"``).

    ``normalization="none"`` compares the raw intensities.
    """
    prediction, target = np.asarray(prediction), np.asarray(target)
    if prediction.shape != target.shape:
        raise DataError(f"Prediction shape {prediction.shape} differs from target shape {target.shape}.")
    if normalization == "percentile":
        prediction, target = percentile_normalize(prediction), percentile_normalize(target)
    elif normalization != "none":
        raise DataError(
            f"Unknown metric normalisation {normalization!r}: use one of {', '.join(NORMALIZATIONS)}."
        )
    return {
        "MAE": mean_absolute_error(prediction, target),
        "SSIM": ssim(prediction, target),
        "PCC": pearson(prediction, target),
        "E_dist": euclidean_distance(prediction, target),
        "C_dist": cosine_distance(prediction, target),
        "PSNR": psnr(prediction, target),
    }


def _pair(prediction: np.ndarray, target: np.ndarray, flatten: bool = True) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(prediction, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"Prediction shape {a.shape} differs from target shape {b.shape}.")
    if a.size == 0:
        raise DataError("Cannot compute metrics on empty images.")
    return (a.ravel(), b.ravel()) if flatten else (a, b)


# --- Batched torch versions, for validation during training: (B, C, H, W) -> (B,) ---------------------


def batch_psnr(
    prediction: torch.Tensor, target: torch.Tensor, data_range: float | None = None
) -> torch.Tensor:
    """PSNR per sample in dB; ``data_range`` defaults to each target's range."""
    pred, tgt = prediction.double().flatten(1), target.double().flatten(1)
    peak = (tgt.amax(1) - tgt.amin(1)) if data_range is None else torch.full_like(tgt[:, 0], data_range)
    mse = (pred - tgt).square().mean(1)
    return 10 * torch.log10(peak.square() / mse)


def batch_pearson(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample (0 for constant samples)."""
    pred, tgt = prediction.double().flatten(1), target.double().flatten(1)
    pred = pred - pred.mean(1, keepdim=True)
    tgt = tgt - tgt.mean(1, keepdim=True)
    denominator = (pred.square().sum(1) * tgt.square().sum(1)).sqrt()
    corr = (pred * tgt).sum(1) / denominator
    return torch.where(denominator > 0, corr, torch.zeros_like(corr)).clamp(-1, 1)


def batch_percentile_normalize(batch: torch.Tensor) -> torch.Tensor:
    """:func:`percentile_normalize` of each sample of a ``(B, ...)`` tensor (a constant sample maps to 0)."""
    flat = batch.flatten(1).float()
    quantiles = torch.tensor(CHALLENGE_PERCENTILES, device=flat.device) / 100
    bounds = torch.quantile(flat, quantiles, dim=1)  # (2, B)
    scale = (bounds[1] - bounds[0]).clamp_min(1e-12)
    return ((flat - bounds[0, :, None]) / scale[:, None]).view_as(batch)


def batch_ssim(
    prediction: torch.Tensor, target: torch.Tensor, data_range: float | None = None, win_size: int = 7
) -> torch.Tensor:
    """SSIM per sample, identical to skimage's default (uniform window, sample covariance, valid region).

    ``data_range`` defaults to each sample's larger range of prediction and target.
    """
    pred, tgt = prediction.double(), target.double()
    if data_range is None:
        ranges = torch.maximum(_sample_range(pred), _sample_range(tgt))
    else:
        ranges = torch.full((pred.shape[0],), float(data_range), dtype=pred.dtype, device=pred.device)
    c1 = (0.01 * ranges).square().view(-1, 1, 1, 1)
    c2 = (0.03 * ranges).square().view(-1, 1, 1, 1)
    cov_norm = win_size**2 / (win_size**2 - 1)

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, win_size, stride=1)

    mu_p, mu_t = local_mean(pred), local_mean(tgt)
    var_p = cov_norm * (local_mean(pred * pred) - mu_p * mu_p)
    var_t = cov_norm * (local_mean(tgt * tgt) - mu_t * mu_t)
    cov = cov_norm * (local_mean(pred * tgt) - mu_p * mu_t)
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return ssim_map.flatten(1).mean(1)


def _sample_range(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    return flat.amax(1) - flat.amin(1)
