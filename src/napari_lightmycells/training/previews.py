"""Preview images written to disk: one TIFF stack (float32, one page per image) and one PNG montage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from ..data.normalize import to_uint8


def save_previews(images: dict[str, np.ndarray], folder: str | Path, epoch: int) -> list[Path]:
    """Write ``epoch_NNNN.tif`` (pages in ``images`` order) and ``epoch_NNNN.png`` (side by side)."""
    import imageio.v3 as iio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    planes = [np.asarray(image, dtype=np.float32) for image in images.values()]
    stem = folder / f"epoch_{epoch:04d}"
    tifffile.imwrite(
        stem.with_suffix(".tif"), np.stack(planes), photometric="minisblack", metadata={"names": list(images)}
    )
    montage = np.concatenate([to_uint8(plane) for plane in planes], axis=-1)
    iio.imwrite(stem.with_suffix(".png"), montage)
    return [stem.with_suffix(".tif"), stem.with_suffix(".png")]
