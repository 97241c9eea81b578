"""napari sample data: a small synthetic LightMyCells case, and a real phase-contrast Z-stack with its DAPI nuclei."""

from __future__ import annotations

import tempfile

from ._reader import LayerData, read_layers
from .constants import ORGANELLE_COLORMAPS
from .data.synthetic import make_synthetic_study


def synthetic_case() -> list[LayerData]:
    """A 5-plane 256x256 brightfield Z-stack (sharpest in the middle) and its Nucleus fluorescence."""
    with tempfile.TemporaryDirectory(prefix="lightmycells-sample-") as folder:
        make_synthetic_study(
            folder, n_cases=1, size=256, n_planes=5, organelles=("Nucleus",), modalities=("BF",)
        )
        return read_layers(folder)


def real_phase_contrast_case() -> list[LayerData]:
    """Cultured neurons (Christiansen et al., Cell 2018): 5 phase-contrast planes and confocal DAPI, 1024x1024,
    downloaded once into the cache. Offline, a :class:`DataError` whose one-line message napari shows as its
    notification (napari refuses a sample without layers, so there is nothing to return instead)."""
    from napari.utils.notifications import show_info

    from .data.samples import ISL_CITATION, load_isl_sample

    stack, dapi = load_isl_sample()
    show_info(f"Real sample from {ISL_CITATION}.")
    metadata = {"source": ISL_CITATION}
    return [
        (stack, {"name": "isl PC (z-stack)", "metadata": {**metadata, "modality": "PC"}}, "image"),
        (
            dapi,
            {
                "name": "isl Nucleus (DAPI)",
                "colormap": ORGANELLE_COLORMAPS["Nucleus"],
                "blending": "additive",
                "metadata": metadata,
            },
            "image",
        ),
    ]
