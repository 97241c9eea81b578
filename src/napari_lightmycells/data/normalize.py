"""Per-image intensity normalisation whose statistics are kept to undo it on predictions."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..constants import CHALLENGE_PERCENTILES
from ..errors import DataError

NORMALIZATIONS = ("zscore", "percentile")


@dataclass(frozen=True)
class NormStats:
    """What was subtracted (``offset``) and divided by (``scale``): ``x_norm = (x - offset) / scale``."""

    method: str
    offset: float
    scale: float

    def to_dict(self) -> dict:
        return asdict(self)


def compute_stats(image: np.ndarray, method: str = "zscore") -> NormStats:
    """Statistics of ``image``: mean/std (``zscore``) or its :data:`CHALLENGE_PERCENTILES` (``percentile``)."""
    values = np.asarray(image)
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise DataError("Image contains NaN or infinite values; clean it before normalising.")
    if method == "zscore":  # accumulated in float64 without a float64 copy of the image
        offset, scale = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
    elif method == "percentile":
        lo, hi = np.percentile(values.astype(np.float64), CHALLENGE_PERCENTILES)
        offset, scale = float(lo), float(hi - lo)
    else:
        raise DataError(f"Unknown normalisation {method!r}: use one of {', '.join(NORMALIZATIONS)}.")
    if not scale > 1e-12:
        raise DataError("Image is constant (no intensity variation); it cannot be normalised.")
    return NormStats(method, offset, scale)


def normalize(
    image: np.ndarray, method: str = "zscore", stats: NormStats | None = None
) -> tuple[np.ndarray, NormStats]:
    """Return ``(float32 normalised image, stats)``; pass ``stats`` to reuse known statistics."""
    stats = stats or compute_stats(image, method)
    out = (np.asarray(image, dtype=np.float32) - np.float32(stats.offset)) / np.float32(stats.scale)
    return out, stats


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit display version of ``image``, contrast stretched between its :data:`CHALLENGE_PERCENTILES`."""
    low, high = np.percentile(image, CHALLENGE_PERCENTILES)
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image, dtype=np.float64)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def denormalize(image, stats: NormStats):
    """Undo :func:`normalize` (works on numpy arrays and torch tensors)."""
    return image * stats.scale + stats.offset
