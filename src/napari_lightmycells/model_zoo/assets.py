"""Files that go into a bioimage.io package besides the weights: test image, cover and README."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checkpoint import ModelCard
from ..constants import CHALLENGE_PERCENTILES
from ..data.normalize import to_uint8
from ..errors import DataError

PAPER = (
    "Franco-Barranco D, González-Marfil A, Arganda-Carreras I. Self-supervised Vision Transformers for "
    "image-to-image labeling: a BiaPy solution to the LightMyCells Challenge. ISBI 2024."
)
PAPER_DOI = "10.1109/ISBI56570.2024.10635343"
PREPRINT_DOI = "10.1101/2024.04.22.590525"
PROJECT_URL = "https://github.com/napari-lightmycells/napari-lightmycells"


def synthetic_transmitted_light(size: int, seed: int = 0) -> np.ndarray:
    """A deterministic cell-like transmitted-light image (smooth blobs with bright rims) for test tensors."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal((size, size)), sigma=max(1.0, size / 16))
    cells = np.abs(field) < 0.3 * field.std()
    image = (
        1000 + 200 * gaussian_filter(cells.astype(np.float64), 1.0) + 20 * rng.standard_normal((size, size))
    )
    return image.astype(np.float32)


def crop_to_token_multiple(image: np.ndarray, max_size: int, token_size: int) -> np.ndarray:
    """Centre crop of a 2D ``image``: sides at most ``max_size``, floored to multiples of ``token_size``."""
    image = np.squeeze(np.asarray(image, dtype=np.float32))
    if image.ndim != 2 or min(image.shape) < token_size:
        raise DataError(f"test_image must be 2D with sides >= {token_size}, got shape {image.shape}")
    sizes = [min(side, max_size) // token_size * token_size for side in image.shape]
    starts = [(side - size) // 2 for side, size in zip(image.shape, sizes)]
    return image[starts[0] : starts[0] + sizes[0], starts[1] : starts[1] + sizes[1]]


def write_cover(path: Path, image: np.ndarray, prediction: np.ndarray) -> Path:
    """PNG with the input (grey) and the prediction (green) side by side (2:1), 256 to 512 px high."""
    from PIL import Image

    left = np.repeat(to_uint8(image)[..., None], 3, axis=2)
    right = np.zeros_like(left)
    right[..., 1] = to_uint8(prediction)
    cover = Image.fromarray(np.concatenate([left, right], axis=1))
    height = min(max(cover.height, 256), 512)
    if height != cover.height:
        resample = Image.Resampling.NEAREST if height > cover.height else Image.Resampling.BILINEAR
        cover = cover.resize((cover.width * height // cover.height, height), resample)
    cover.save(path)
    return path


def readme(card: ModelCard, name: str) -> str:
    """Markdown documentation of an exported model."""
    cfg = card.config
    enc = cfg.encoder
    modality = "/".join(card.modality) or "any transmitted-light modality (BF, PC, DIC)"
    organelle = card.organelle or "a fluorescence channel"
    normalization = (
        "`zero_mean_unit_variance` over y and x of each image (per-image z-score)"
        if card.normalization == "zscore"
        else "`scale_range` between the {:g}th and {:g}th percentiles of each image".format(
            *CHALLENGE_PERCENTILES
        )
    )
    return f"""# {name}

Predicts **{organelle}** fluorescence from a label-free **{modality}** image: a 2D UNETR (Vision
Transformer encoder, convolutional decoder) as in the BiaPy solution to the LightMyCells challenge
(ISBI 2024), exported by [napari-lightmycells]({PROJECT_URL}).

## Input and output

- Input `input`: one transmitted-light plane, axes (batch, channel, y, x), float32. Height and width
  must be multiples of {enc.token_size} pixels; the model was trained on {enc.crop_size}x{enc.crop_size} crops.
  Use the in-focus plane of a z-stack.
- Preprocessing: {normalization}.
- Output `output`: the predicted {organelle} image, same size as the input, **in the normalised
  units of the input** (no postprocessing). napari-lightmycells additionally maps predictions back to the
  input's intensity range, `prediction * std(input) + mean(input)`, as BiaPy does. The bioimage.io
  spec has no operation for this (`scale_mean_variance` would also re-standardise the prediction), and
  any affine map leaves the challenge metrics unchanged, which percentile-normalise predictions.
- Large images are best predicted in overlapping tiles of about {enc.crop_size} pixels.

## Architecture

ViT encoder: {enc.embed_dim}-dimensional tokens of {enc.token_size}x{enc.token_size} pixels, {enc.depth} blocks,
{enc.num_heads} heads, fixed 2D sin-cos positional embedding (resampled bicubically for other input
sizes). Decoder: skips from blocks {list(cfg.resolved_skip_blocks())}, {cfg.decoder_filters} base filters,
{cfg.kernel_size}x{cfg.kernel_size} kernels, `{cfg.decoder_norm}` normalisation, `{cfg.decoder_activation}` activation.
The architecture file `unetr_standalone.py` only needs PyTorch. The attached
`lightmycells_model_card.json` holds the rest of the napari-lightmycells checkpoint (configuration,
organelle, modality, provenance): `lightmycells import` restores the checkpoint exactly.

## Validation

The test tensors of this package (a {enc.crop_size}x{enc.crop_size} image and this model's prediction) are
reproduced by `bioimageio.core.test_model`. For accuracy on the LightMyCells challenge data (SSIM,
Pearson correlation, Euclidean and cosine distances per organelle), see the paper below.

## Usage

- napari-lightmycells: `lightmycells import model.zip --output model.pt`, then predict with it.
- bioimageio.core: `bioimageio predict model.zip ...` or `bioimageio.core.predict(model=..., inputs=...)`.

## Citation

{PAPER} doi:{PAPER_DOI} (preprint doi:{PREPRINT_DOI}).
"""
