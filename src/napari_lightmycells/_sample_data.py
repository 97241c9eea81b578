"""napari sample data: one small synthetic LightMyCells case (BF Z-stack and its Nucleus target)."""

from __future__ import annotations

import tempfile

from ._reader import LayerData, read_layers
from .data.synthetic import make_synthetic_study


def synthetic_case() -> list[LayerData]:
    """A 5-plane 256x256 brightfield Z-stack (sharpest in the middle) and its Nucleus fluorescence."""
    with tempfile.TemporaryDirectory(prefix="lightmycells-sample-") as folder:
        make_synthetic_study(
            folder, n_cases=1, size=256, n_planes=5, organelles=("Nucleus",), modalities=("BF",)
        )
        return read_layers(folder)
