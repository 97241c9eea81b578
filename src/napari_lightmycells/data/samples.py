"""A real sample: phase-contrast Z-stack and DAPI nuclei of cultured neurons, downloaded once and cached.

The images come from Christiansen et al., *In silico labeling: predicting fluorescent labels in unlabeled
images*, Cell 2018 (github.com/google/in-silico-labeling, Apache-2.0), at a pinned commit: five of the 13
phase-contrast planes (``z_depth-0,3,6,9,12``) and the confocal DAPI max projection of one 1024² field.
Each file is fetched with pooch into ``<cache>/samples/isl-<commit>`` and checked against its SHA-256.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError

ISL_COMMIT = "5db882bfab3a1409caca1c4a913c3aa7471c9a3a"
ISL_URL = f"https://raw.githubusercontent.com/google/in-silico-labeling/{ISL_COMMIT}/isl/testdata/condition_blue_sample/"
ISL_PREFIX = (
    "lab-FINKBEINER,condition-KEVAN_0_8,acquisition_date,year-2015,month-10,day-5,minute-0,well-A4,"
    "tile_computation-STITCHED,"
)
ISL_PLANES = {  # z_depth -> SHA-256
    0: "f9c8ff6ca50c75d2ae94e70333caefe05c94dddba5ff90216bca5b9498b8fc5a",
    3: "19cdeb7fe097ca4f896813a3f8ba58e3c0bb03e8e2a1697ac0a0ae016dc67b17",
    6: "1d3f266e72a9fc2deda8c0dd51dcd74bb2962c651c4c03eda50835bbe82c124e",
    9: "3308e318dc806cfffbb276b0f159e518d6ac5fe01909a513be0103619b1652c2",
    12: "787f35dcc662983b0bc66fd52cdc2f87b2f98f22d8aba5cec9aff2773702b5af",
}
ISL_DAPI_SHA256 = "9c4a1871cc83ea3b5bbf5ca8586c901a03d16b1dbe64277f650dcbccbfa6407f"
ISL_CITATION = (
    "Christiansen et al., In silico labeling: predicting fluorescent labels in unlabeled images, Cell 2018 "
    "(github.com/google/in-silico-labeling, Apache-2.0)"
)


def isl_files() -> dict[str, str]:
    """File name -> SHA-256 of the sample: the phase-contrast planes (shallow to deep), then DAPI."""
    files = {
        f"{ISL_PREFIX}z_depth-{z},channel-PHASE_CONTRAST,is_mask-false.png": sha
        for z, sha in ISL_PLANES.items()
    }
    files[f"{ISL_PREFIX}depth_computation-MAXPROJECT,channel-DAPI_CONFOCAL,is_mask-false.png"] = (
        ISL_DAPI_SHA256
    )
    return files


def fetch_isl_sample(base_url: str | None = None, cache: str | os.PathLike | None = None) -> list[Path]:
    """Local paths of the sample's PNGs (planes, then DAPI), downloaded from ``base_url`` (default: the pinned
    GitHub commit, or ``$LIGHTMYCELLS_SAMPLE_URL``) into the cache the first time; every file's SHA-256 is checked."""
    import pooch

    from ..files import file_mode
    from ..hub import cache_dir

    base_url = base_url or os.environ.get("LIGHTMYCELLS_SAMPLE_URL") or ISL_URL
    folder = Path(cache or cache_dir()) / "samples" / f"isl-{ISL_COMMIT[:7]}"
    paths = []
    for name, sha256 in isl_files().items():
        url = base_url.rstrip("/") + "/" + name
        try:
            path = Path(
                pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=name, path=folder, progressbar=False)
            )
        except Exception as error:  # requests, OSError and pooch's hash mismatch all mean "no sample"
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DataError(
                f"Could not download the real sample from {base_url} ({reason}); check the connection."
            ) from None
        path.chmod(file_mode())  # pooch's temporary file is 0600: make it readable as the umask allows
        paths.append(path)
    return paths


def load_isl_sample(
    base_url: str | None = None, cache: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(phase-contrast ZYX stack uint16 (5, 1024, 1024), DAPI YX uint16)`` of the sample (see :func:`fetch_isl_sample`)."""
    import imageio.v3 as iio

    *planes, dapi = fetch_isl_sample(base_url, cache)
    return np.stack([iio.imread(path) for path in planes]), iio.imread(dapi)
