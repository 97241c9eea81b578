"""Best-focus plane selection: the least blurry plane according to scikit-image's ``blur_effect``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.measure import blur_effect

from ..errors import DataError


def blur_scores(planes: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """``blur_effect`` of each plane of a ``ZYX`` stack or list of 2D planes (0 sharp ... 1 blurry)."""
    planes = [np.asarray(plane, dtype=np.float64) for plane in planes]
    if not planes or any(plane.ndim != 2 for plane in planes):
        raise DataError("Focus selection needs a Z-stack (ZYX) or a non-empty list of 2D planes.")
    return np.array([blur_effect(plane) for plane in planes])


def best_focus_index(planes: np.ndarray | Sequence[np.ndarray]) -> int:
    """Index of the least blurry plane (a 2D image is its own best focus: index 0)."""
    if isinstance(planes, np.ndarray) and planes.ndim == 2:
        return 0
    scores = blur_scores(planes)
    return int(np.nanargmin(scores)) if not np.isnan(scores).all() else 0


def best_focus_plane(planes: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """The least blurry plane itself."""
    if isinstance(planes, np.ndarray) and planes.ndim == 2:
        return planes
    return np.asarray(planes[best_focus_index(planes)])
