"""Import bioimage.io UNETR packages: ours (lossless, via the attached model card) and BiaPy's."""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from pathlib import Path

import torch

from ..checkpoint import ModelCard, card_from_checkpoint
from ..constants import ORGANELLES
from ..errors import CheckpointError, ModelError
from ..models import UNETR2D, build_model
from ..models.biapy import unetr_from_biapy
from .architecture import (
    BIAPY_CALLABLE,
    BIAPY_IMPORT_FROM,
    STANDALONE_CALLABLE,
    biapy_cfg,
    config_from_standalone_kwargs,
)
from .export import CARD_ATTACHMENT, require_bioimageio

logger = logging.getLogger(__name__)
MIB = 1024**2
# Caps on what a package member may unpack to (checked from the zip directory before anything is read).
MAX_WEIGHTS_BYTES = 4096 * MIB  # the paper's model: 0.86 GiB per weights format
MAX_MEMBER_BYTES = 256 * MIB  # rdf.yaml, test tensors, cover, README, model card, architecture file
MAX_PACKAGE_BYTES = 12 * 1024 * MIB
WEIGHT_SUFFIXES = (".pt", ".pth", ".onnx", ".h5", ".hdf5", ".pb", ".bin", ".ckpt")
NORMALIZATIONS = {"zero_mean_unit_variance": "zscore", "scale_range": "percentile"}


def import_bioimageio(source: str | os.PathLike) -> tuple[UNETR2D, ModelCard]:
    """Rebuild the UNETR of a bioimage.io package (zip, folder or rdf.yaml) in eval mode on the CPU.

    Packages exported by napari-lightmycells come back exactly (weights + attached model card); others
    are rebuilt from their ``pytorch_state_dict`` architecture: our standalone UNETR2D or BiaPy's UNETR.
    """
    check_member_sizes(source)
    descr = load_model_description(source)
    weights = descr.weights.pytorch_state_dict
    if weights is None:
        raise ModelError(f"{descr.name}: no pytorch_state_dict weights to import.")
    state = _read_state_dict(weights, descr.name)
    card_file = next((a for a in descr.attachments if _file_name(a.source) == CARD_ATTACHMENT), None)
    if card_file is not None:
        try:
            payload = json.loads(card_file.get_reader().read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ModelError(f"{descr.name}: {CARD_ATTACHMENT} is not valid JSON ({error}).") from None
        card = card_from_checkpoint(payload, str(source))
        model = build_model(card.config)
        _load_state(model, state, descr.name)
        return model.eval(), card
    return _from_architecture(descr, weights.architecture, state, source)


def check_member_sizes(source: str | os.PathLike) -> None:
    """Refuse a zip whose members would unpack to more than the caps (weights files get a larger one)."""
    if "://" in str(source) or not zipfile.is_zipfile(source):
        return
    with zipfile.ZipFile(source) as package:
        members = package.infolist()
    total = 0
    for member in members:
        cap = MAX_WEIGHTS_BYTES if member.filename.endswith(WEIGHT_SUFFIXES) else MAX_MEMBER_BYTES
        total += member.file_size
        if member.file_size > cap:
            raise ModelError(
                f"{Path(source).name}: {member.filename} unpacks to {member.file_size / MIB:.0f} MiB, over the "
                f"{cap / MIB:.0f} MiB allowed for such a file in a model package; the package is not imported."
            )
    if total > MAX_PACKAGE_BYTES:
        raise ModelError(
            f"{Path(source).name} unpacks to {total / MIB:.0f} MiB, over {MAX_PACKAGE_BYTES / MIB:.0f} MiB."
        )


def _read_state_dict(weights, name: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(io.BytesIO(weights.get_reader().read()), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or truncated files
        raise ModelError(
            f"{name}: the pytorch_state_dict weights cannot be read ({type(error).__name__})."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(
            f"{name}: the pytorch_state_dict weights hold a {type(state).__name__}, not a state dict "
            "(parameter name -> tensor)."
        )
    return state


def load_model_description(source: str | os.PathLike):
    """The validated :class:`ModelDescr` of ``source`` (converted to spec 0.5); :class:`ModelError` if invalid."""
    spec = require_bioimageio()
    if "://" not in str(source) and not Path(source).exists():
        raise ModelError(f"bioimage.io package not found: {source}")
    try:
        return spec.load_model_description(source, format_version="latest")
    except ValueError as error:  # invalid, or not a model
        raise ModelError(f"{source} is not a valid bioimage.io model: {error}") from None


def _from_architecture(descr, arch, state, source) -> tuple[UNETR2D, ModelCard]:
    kwargs = dict(arch.kwargs)
    if getattr(arch, "import_from", None) == BIAPY_IMPORT_FROM and arch.callable == BIAPY_CALLABLE:
        model = unetr_from_biapy({"model": state, "cfg": biapy_cfg(kwargs)})
        source_name = "biapy"
    elif arch.callable == STANDALONE_CALLABLE and "embed_dim" in kwargs:
        model = UNETR2D(config_from_standalone_kwargs(kwargs))
        _load_state(model, state, descr.name)
        source_name = "bioimageio"
    else:
        raise ModelError(
            f"{descr.name}: unsupported architecture {arch.callable!r}; "
            f"expected napari-lightmycells' {STANDALONE_CALLABLE} or BiaPy's {BIAPY_IMPORT_FROM}.{BIAPY_CALLABLE}."
        )
    card = ModelCard(
        kind="unetr",
        config=model.config,
        organelle=_organelle(descr),
        normalization=_normalization(descr),
        provenance={
            "source": source_name,
            "bioimageio_name": descr.name,
            "bioimageio_id": str(descr.id or ""),
        },
        path=str(source),
    )
    return model.eval(), card


def _load_state(model: torch.nn.Module, state: dict, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{name}: weights do not match the architecture ({error})") from None


def _normalization(descr) -> str:
    steps = [step.id for step in descr.inputs[0].preprocessing if step.id != "ensure_dtype"]
    if steps and steps[0] in NORMALIZATIONS:
        return NORMALIZATIONS[steps[0]]
    logger.warning(
        "%s: preprocessing %s has no napari-lightmycells equivalent; using z-score.", descr.name, steps
    )
    return "zscore"


def _organelle(descr) -> str | None:
    words = f"{descr.name} {descr.description} {' '.join(descr.tags)}".lower()
    found = [organelle for organelle in ORGANELLES if organelle.lower() in words]
    return found[0] if len(found) == 1 else None


def _file_name(source) -> str:
    return str(source).replace("\\", "/").rsplit("/", 1)[-1]
