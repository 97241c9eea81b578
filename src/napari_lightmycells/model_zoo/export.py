"""Export a UNETR checkpoint as a BioImage Model Zoo package (bioimage.io spec 0.5)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import FORMAT, FORMAT_VERSION, ModelCard, load_checkpoint
from ..constants import CHALLENGE_PERCENTILES
from ..errors import ModelError
from ..files import atomic_write, check_new_file
from .architecture import STANDALONE_CALLABLE, STANDALONE_FILE, standalone_kwargs
from .assets import (
    PAPER,
    PAPER_DOI,
    PREPRINT_DOI,
    PROJECT_URL,
    crop_to_token_multiple,
    readme,
    synthetic_transmitted_light,
    write_cover,
)

logger = logging.getLogger(__name__)
CARD_ATTACHMENT = "lightmycells_model_card.json"
EPS = 1e-6


def export_bioimageio(
    checkpoint_path: str | os.PathLike,
    output_zip: str | os.PathLike,
    name: str | None = None,
    authors: Sequence[str] | None = None,
    cover: str | os.PathLike | None = None,
    test_image: np.ndarray | None = None,
    *,
    license: str = "BSD-3-Clause",
    overwrite: bool = False,
) -> Path:
    """Write ``checkpoint_path`` (a UNETR checkpoint, ours or BiaPy's) as a bioimage.io model zip.

    ``test_image``: a 2D transmitted-light image for the test tensors and cover (centre-cropped to the
    training size); a synthetic one by default. ``cover``: an image file to use instead of the generated one.
    An existing ``output_zip`` is replaced only with ``overwrite`` (checked first); the zip is written atomically.
    """
    output_zip = check_new_file(output_zip, overwrite)
    save_bioimageio_package = require_bioimageio().save_bioimageio_package
    from pydantic import ValidationError

    model, card = load_checkpoint(checkpoint_path)
    if card.kind != "unetr":
        raise ModelError("Only UNETR (organelle prediction) checkpoints can be exported, not MAE encoders.")
    if card.normalization not in ("zscore", "percentile"):
        raise ModelError(f"Normalisation {card.normalization!r} has no bioimage.io equivalent.")
    with tempfile.TemporaryDirectory(prefix="lightmycells-export-") as folder:
        try:
            descr = describe(model, card, Path(folder), name, authors, cover, test_image, license)
        except ValidationError as error:
            raise ModelError(f"Cannot describe the model for bioimage.io: {error}") from None
        atomic_write(output_zip, lambda tmp: save_bioimageio_package(descr, output_path=Path(tmp)))
    return output_zip


def require_bioimageio():
    """The ``bioimageio.spec`` module, or a :class:`ModelError` telling how to install it."""
    try:
        import bioimageio.spec
    except ImportError:
        raise ModelError("bioimage.io packages need `pip install bioimageio.core`.") from None
    return bioimageio.spec


def describe(model, card: ModelCard, folder: Path, name, authors, cover, test_image, license):
    """The :class:`ModelDescr` of ``model``, its files written into ``folder``."""
    from bioimageio.spec.model import v0_5 as spec

    enc = card.config.encoder
    image = test_image if test_image is not None else synthetic_transmitted_light(enc.crop_size)
    image = crop_to_token_multiple(image, enc.crop_size, enc.token_size)
    prediction = predict_normalised(model, image, card.normalization)
    np.save(folder / "test_input.npy", image[None, None])
    np.save(folder / "test_output.npy", prediction[None, None])
    cover_path = folder / f"cover{Path(cover).suffix}" if cover else folder / "cover.png"
    if cover:
        shutil.copyfile(cover, cover_path)
    else:
        write_cover(cover_path, image, prediction)
    name = name or default_name(card)
    (folder / "README.md").write_text(readme(card, name), encoding="utf-8")
    torch.save(model.state_dict(), folder / "weights.pt")
    shutil.copyfile(STANDALONE_FILE, folder / STANDALONE_FILE.name)
    write_card(folder / CARD_ATTACHMENT, card)
    torchscript = script_weights(model, folder / "weights_torchscript.pt")

    y, x = spec.AxisId("y"), spec.AxisId("x")
    input_id, output_id = spec.TensorId("input"), spec.TensorId("output")
    modality = "_".join(card.modality) or "transmitted_light"
    organelle = card.organelle or "prediction"
    step = spec.ParameterizedSize(min=enc.token_size, step=enc.token_size)
    pytorch_version = spec.Version(torch.__version__.split("+")[0])
    weights = spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt",
            architecture=spec.ArchitectureFromFileDescr(
                source=folder / STANDALONE_FILE.name,
                callable=spec.Identifier(STANDALONE_CALLABLE),
                kwargs=standalone_kwargs(card.config),
            ),
            pytorch_version=pytorch_version,
        ),
        torchscript=spec.TorchscriptWeightsDescr(
            source=torchscript,
            pytorch_version=pytorch_version,
            parent="pytorch_state_dict",
            comment="torch.jit.script of unetr_standalone.UNETR2D (any input size)",
        )
        if torchscript
        else None,
    )
    return spec.ModelDescr(
        name=name,
        description=(
            f"UNETR predicting {organelle} fluorescence from label-free {'/'.join(card.modality) or 'transmitted-light'}"
            " microscopy (LightMyCells challenge, BiaPy solution), exported by napari-lightmycells."
        ),
        authors=[spec.Author(name=author) for author in (authors or ["napari-lightmycells developers"])],
        cite=[
            spec.CiteEntry(text=PAPER, doi=spec.Doi(PAPER_DOI)),
            spec.CiteEntry(text=f"{PAPER} Preprint, bioRxiv.", doi=spec.Doi(PREPRINT_DOI)),
            spec.CiteEntry(
                text="napari-lightmycells: napari plugin for LightMyCells UNETR models.",
                url=spec.HttpUrl(PROJECT_URL),
            ),
        ],
        license=spec.LicenseId(license),
        git_repo=spec.HttpUrl(PROJECT_URL),
        documentation=folder / "README.md",
        covers=[cover_path],
        attachments=[spec.FileDescr(source=folder / CARD_ATTACHMENT)],
        tags=tags(card),
        inputs=[
            spec.InputTensorDescr(
                id=input_id,
                description=f"label-free {'/'.join(card.modality) or 'transmitted-light'} image",
                axes=[
                    spec.BatchAxis(),
                    spec.ChannelAxis(channel_names=[spec.Identifier(modality)]),
                    spec.SpaceInputAxis(id=y, size=step),
                    spec.SpaceInputAxis(id=x, size=step),
                ],
                test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
                data=spec.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[preprocessing(card.normalization, (y, x))],
            )
        ],
        outputs=[
            spec.OutputTensorDescr(
                id=output_id,
                description=f"predicted {organelle}, in the input's normalised units",
                axes=[
                    spec.BatchAxis(),
                    spec.ChannelAxis(channel_names=[spec.Identifier(organelle)]),
                    spec.SpaceOutputAxis(id=y, size=spec.SizeReference(tensor_id=input_id, axis_id=y)),
                    spec.SpaceOutputAxis(id=x, size=spec.SizeReference(tensor_id=input_id, axis_id=x)),
                ],
                test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
                data=spec.IntervalOrRatioDataDescr(type="float32"),
            )
        ],
        weights=weights,
        config=spec.Config(
            bioimageio=spec.BioimageioConfig(
                architecture_type="UNETR",
                task="image-to-image",
                modality=f"label-free transmitted light ({'/'.join(card.modality) or 'BF/PC/DIC'})",
                target_structure=[organelle],
            ),
            napari_lightmycells={
                "model_card": CARD_ATTACHMENT,
                "organelle": card.organelle,
                "modality": list(card.modality),
                "normalization": card.normalization,
            },
        ),
    )


def write_card(path: Path, card: ModelCard) -> Path:
    """Our checkpoint without its weights (those are ``weights.pt``): config, organelle, modality, provenance."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": card.kind,
        "config": card.config.to_dict(),
        "organelle": card.organelle,
        "modality": list(card.modality),
        "normalization": card.normalization,
        "provenance": card.provenance,
    }
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return path


def preprocessing(normalization: str, axes):
    """The bioimage.io equivalent of :func:`napari_lightmycells.data.normalize.normalize`."""
    from bioimageio.spec.model import v0_5 as spec

    if normalization == "zscore":
        return spec.ZeroMeanUnitVarianceDescr(
            kwargs=spec.ZeroMeanUnitVarianceKwargs(axes=list(axes), eps=EPS)
        )
    low, high = CHALLENGE_PERCENTILES
    return spec.ScaleRangeDescr(
        kwargs=spec.ScaleRangeKwargs(axes=list(axes), min_percentile=low, max_percentile=high, eps=EPS)
    )


def predict_normalised(model: torch.nn.Module, image: np.ndarray, normalization: str) -> np.ndarray:
    """Model output for ``image`` preprocessed exactly as bioimage.io does (``eps`` included)."""
    values = image.astype(np.float64)
    if normalization == "zscore":
        offset, scale = values.mean(), values.std()
    else:
        offset, high = np.percentile(values, CHALLENGE_PERCENTILES)
        scale = high - offset
    normalised = ((values - offset) / (scale + EPS)).astype(np.float32)
    with torch.no_grad():
        return model.eval()(torch.from_numpy(normalised)[None, None])[0, 0].numpy()


def script_weights(model: torch.nn.Module, path: Path) -> Path | None:
    """TorchScript of the standalone architecture holding ``model``'s weights, or None if scripting fails."""
    from .unetr_standalone import UNETR2D

    try:
        network = UNETR2D(**standalone_kwargs(model.config))
        network.load_state_dict(model.state_dict(), strict=True)
        torch.jit.save(torch.jit.script(network.eval()), str(path))
    except Exception as error:
        logger.warning("No TorchScript weights (scripting failed: %s); exporting the state dict only.", error)
        return None
    return path


def default_name(card: ModelCard) -> str:
    modality = "+".join(card.modality)
    return f"LightMyCells UNETR {card.organelle or 'fluorescence'}{f' from {modality}' if modality else ''}"


def tags(card: ModelCard) -> list[str]:
    base = [
        "napari-lightmycells",
        "lightmycells",
        "biapy",
        "unetr",
        "vision-transformer",
        "pytorch",
        "2d",
        "image-to-image",
        "label-free",
        "in-silico-labeling",
        "transmitted-light",
        "fluorescence",
    ]
    return base + [m.lower() for m in card.modality] + ([card.organelle.lower()] if card.organelle else [])
