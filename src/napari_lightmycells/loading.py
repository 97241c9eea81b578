"""One entry point for every model file a user can give: a checkpoint (ours or BiaPy's, ``.pt``/``.pth``)
or a bioimage.io package (``.zip``, ``rdf.yaml``).

It sits above both layers, so :mod:`.checkpoint` never imports :mod:`.model_zoo`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import ModelCard, load_checkpoint

BIOIMAGEIO_SUFFIXES = (".zip", ".yaml", ".yml")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model stored in ``path`` in eval mode on ``device``, with its :class:`ModelCard`."""
    if Path(path).suffix.lower() in BIOIMAGEIO_SUFFIXES:
        from .model_zoo import import_bioimageio

        model, card = import_bioimageio(path)
        return model.to(device).eval(), card
    return load_checkpoint(path, device)
