"""Models: :class:`UNETR2D` (organelle prediction) and :class:`MAE2D` (self-supervised pretraining)."""

from __future__ import annotations

from torch import nn

from .mae import MAE2D, MAEConfig
from .presets import MAE_PRESETS, ORGANELLE_PRESETS, UNETR_PRESETS, mae_config, unetr_config
from .unetr import UNETR2D, UNETRConfig
from .vit import ViTConfig

__all__ = [
    "MAE2D",
    "MAE_PRESETS",
    "ORGANELLE_PRESETS",
    "UNETR2D",
    "UNETR_PRESETS",
    "MAEConfig",
    "UNETRConfig",
    "ViTConfig",
    "build_model",
    "count_parameters",
    "create_model",
    "mae_config",
    "unetr_config",
]


def build_model(config: UNETRConfig | MAEConfig) -> nn.Module:
    """Instantiate the model a config describes."""
    return UNETR2D(config) if isinstance(config, UNETRConfig) else MAE2D(config)


def create_model(name: str) -> nn.Module:
    """Instantiate a named preset (see ``lightmycells models``)."""
    if name in UNETR_PRESETS:
        return UNETR2D(UNETR_PRESETS[name])
    if name in MAE_PRESETS:
        return MAE2D(MAE_PRESETS[name])
    raise KeyError(f"Unknown model {name!r}: choose from {', '.join([*UNETR_PRESETS, *MAE_PRESETS])}")


def count_parameters(model: nn.Module) -> int:
    """All parameters, frozen positional embeddings included (as BiaPy and torchinfo count them)."""
    return sum(p.numel() for p in model.parameters())
