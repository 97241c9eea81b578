"""Checkpoints: one file with weights, full model config, normalisation, organelle, modality and
provenance (plus, for training runs, everything needed to resume exactly).

Files are written atomically (temporary file in the same folder, fsync, rename), so an
interrupted save never leaves a truncated checkpoint behind. :func:`load_checkpoint` rebuilds the
model without the caller knowing its config, and also accepts BiaPy UNETR checkpoints. Files are read
with torch's weights-only unpickler, never ``weights_only=False``: a checkpoint naming any Python
object outside tensors, plain containers and BiaPy's configuration is refused.
"""

from __future__ import annotations

import os
import pickle
import platform
import re
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .errors import CheckpointError
from .files import atomic_write
from .models import MAE2D, UNETR2D, MAEConfig, UNETRConfig, build_model
from .models.biapy import (
    BIAPY_PICKLE_GLOBALS,
    encoder_state_from_biapy_mae,
    is_biapy_checkpoint,
    plain_config,
    unetr_from_biapy,
)

FORMAT = "napari-lightmycells/checkpoint"
FORMAT_VERSION = 1


@dataclass
class ModelCard:
    """Everything about a model except its weights."""

    kind: str  # "unetr" or "mae"
    config: UNETRConfig | MAEConfig
    organelle: str | None = None
    modality: tuple[str, ...] = ()
    normalization: str = "zscore"
    provenance: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def describe(self) -> str:
        what = self.organelle or ("MAE encoder" if self.kind == "mae" else "UNETR")
        epoch = self.provenance.get("epoch")
        return f"{what} ({'/'.join(self.modality) or 'any modality'}{f', epoch {epoch}' if epoch is not None else ''})"


def provenance(**extra: Any) -> dict[str, Any]:
    """Versions and host of the current process, plus ``extra`` (epoch, metrics, training config...)."""
    return {
        "napari_lightmycells": __version__,
        "torch": str(torch.__version__),
        "timm": metadata.version("timm"),
        "python": platform.python_version(),
        "host": platform.node(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically: readers see the old file or the new one, never half of one."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    organelle: str | None = None,
    modality: tuple[str, ...] | list[str] = (),
    normalization: str = "zscore",
    provenance_extra: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (a :class:`UNETR2D` or :class:`MAE2D`, possibly DDP/compiled-wrapped) to ``path``."""
    model = unwrap(model)
    kind = "unetr" if isinstance(model, UNETR2D) else "mae" if isinstance(model, MAE2D) else None
    if kind is None:
        raise CheckpointError(f"Cannot checkpoint a {type(model).__name__}: expected UNETR2D or MAE2D.")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "organelle": organelle,
        "modality": list(modality),
        "normalization": normalization,
        "provenance": provenance(**(provenance_extra or {})),
    }
    if training_state is not None:
        payload["training_state"] = training_state
    return atomic_save(payload, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file's raw dict on the CPU, with a clear error for missing, corrupt, unsafe or
    foreign files. BiaPy's yacs configuration (``cfg``) comes back as a plain dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(BIAPY_PICKLE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(_refusal(path, error)) from None
    except Exception as error:
        raise CheckpointError(f"{path.name} is not a readable model checkpoint ({one_line(error)})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path.name} holds a {type(checkpoint).__name__}, not a model checkpoint (a dict)."
        )
    if isinstance(checkpoint.get("cfg"), dict):
        checkpoint["cfg"] = plain_config(checkpoint["cfg"])
    return checkpoint


def one_line(error: BaseException, limit: int = 300) -> str:
    """``error`` as ``Type: message`` on one line, shortened to ``limit`` characters."""
    text = " ".join(str(error).split())
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _refusal(path: Path, error: pickle.UnpicklingError) -> str:
    """One line saying why torch's weights-only unpickler refused ``path``, without torch's advice to
    load it with ``weights_only=False``."""
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        unsafe = set(re.findall(r"GLOBAL ([\w.]+) ", str(error)))
    unsafe -= {name for _, name in BIAPY_PICKLE_GLOBALS}
    if not unsafe:
        return f"{path.name} is not a readable model checkpoint (not a PyTorch file, or damaged)."
    return (
        f"{path.name} was refused: it stores Python objects ({', '.join(sorted(unsafe)[:5])}) that could run "
        "code when loaded; only tensors, plain containers and BiaPy configurations are read from checkpoints."
    )


def card_from_checkpoint(checkpoint: dict[str, Any], path: str | None = None) -> ModelCard:
    if checkpoint.get("format") != FORMAT:
        raise CheckpointError("Not a napari-lightmycells checkpoint (no format marker).")
    if checkpoint.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError("Checkpoint was written by a newer napari-lightmycells; please upgrade.")
    kind = checkpoint.get("kind")
    if kind not in ("unetr", "mae"):
        name = Path(path or "checkpoint").name
        raise CheckpointError(f"{name}: unknown model kind {kind!r} (expected 'unetr' or 'mae').")
    try:
        config = (UNETRConfig if kind == "unetr" else MAEConfig).from_dict(checkpoint["config"])
    except (KeyError, TypeError, ValueError) as error:
        name = Path(path or "checkpoint").name
        raise CheckpointError(
            f"{name}: the stored model config is not understood ({one_line(error)})."
        ) from None
    return ModelCard(
        kind=kind,
        config=config,
        organelle=checkpoint.get("organelle"),
        modality=tuple(checkpoint.get("modality") or ()),
        normalization=checkpoint.get("normalization", "zscore"),
        provenance=checkpoint.get("provenance", {}),
        path=path,
    )


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model stored in checkpoint ``path`` (ours or BiaPy's) in eval mode on ``device``."""
    checkpoint = read_checkpoint(path)
    if is_biapy_checkpoint(checkpoint):
        model = unetr_from_biapy(checkpoint)
        card = ModelCard(
            kind="unetr",
            config=model.config,
            provenance={"source": "biapy", "biapy_version": str(checkpoint.get("biapy_version", "unknown"))},
            path=str(path),
        )
        return model.to(device).eval(), card
    card = card_from_checkpoint(checkpoint, str(path))
    model = build_model(card.config)
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(
            f"{Path(path).name}: weights do not match the stored config ({one_line(error)})"
        ) from None
    return model.to(device).eval(), card


def load_encoder_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Encoder weights from an MAE or UNETR checkpoint (ours or BiaPy's), to initialise a UNETR."""
    checkpoint = read_checkpoint(path)
    if is_biapy_checkpoint(checkpoint):
        return encoder_state_from_biapy_mae(checkpoint)
    card_from_checkpoint(checkpoint, str(path))  # validates the format
    prefix = "encoder."
    return {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner
