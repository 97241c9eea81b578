"""napari writer: an image layer (a prediction) as float32 OME-TIFF with the layer scale as pixel size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.io import is_tiff, write_ome_tiff
from .errors import DataError


def write_image_layer(path: str, data: np.ndarray, meta: dict) -> list[str]:
    """Write one 2D or 3D (``ZYX``) image layer; a path without a TIFF suffix gets ``.ome.tiff``."""
    path = Path(path) if is_tiff(path) else Path(f"{path}.ome.tiff")
    if meta.get("rgb") or meta.get("multiscale"):
        raise DataError(
            f"Cannot save {meta.get('name', 'this layer')}: RGB and multiscale layers are not supported."
        )
    data = np.asarray(data)
    scale = meta.get("scale")
    channel = (meta.get("metadata") or {}).get("organelle") or meta.get("name")
    write_ome_tiff(
        path,
        data,
        pixel_size=tuple(scale[-2:]) if scale is not None else None,
        z_step=scale[0] if scale is not None and data.ndim == 3 else None,
        channel_names=(channel,) if channel else (),
        dtype=np.float32,
    )
    return [str(path)]
