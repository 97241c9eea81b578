"""Architecture kwargs of bioimage.io packages <-> :class:`UNETRConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..legacy import ENCODER_RENAMES, renamed
from ..models import UNETRConfig, ViTConfig
from . import unetr_standalone

STANDALONE_FILE = Path(unetr_standalone.__file__)
STANDALONE_CALLABLE = "UNETR2D"
BIAPY_IMPORT_FROM = "biapy.models.unetr"
BIAPY_CALLABLE = "UNETR"


def standalone_kwargs(config: UNETRConfig) -> dict[str, Any]:
    """Kwargs of ``unetr_standalone.UNETR2D`` building the network ``config`` describes."""
    enc = config.encoder
    return {
        "in_channels": enc.in_channels,
        "crop_size": enc.crop_size,
        "token_size": enc.token_size,
        "embed_dim": enc.embed_dim,
        "depth": enc.depth,
        "num_heads": enc.num_heads,
        "mlp_ratio": enc.mlp_ratio,
        "out_channels": config.out_channels,
        "decoder_filters": config.decoder_filters,
        "kernel_size": config.kernel_size,
        "skip_blocks": list(config.resolved_skip_blocks()),
        "decoder_norm": config.decoder_norm,
        "decoder_activation": config.decoder_activation,
    }


def config_from_standalone_kwargs(kwargs: dict[str, Any]) -> UNETRConfig:
    """Inverse of :func:`standalone_kwargs`."""
    kwargs = renamed(kwargs, ENCODER_RENAMES)  # packages exported before the rename
    encoder = ViTConfig(
        **{
            k: kwargs.pop(k)
            for k in (
                "in_channels",
                "crop_size",
                "token_size",
                "embed_dim",
                "depth",
                "num_heads",
                "mlp_ratio",
            )
            if k in kwargs
        }
    )
    skips = kwargs.pop("skip_blocks", None)
    return UNETRConfig(encoder=encoder, skip_blocks=tuple(skips) if skips is not None else None, **kwargs)


def biapy_cfg(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A BiaPy run configuration (as stored in its checkpoints) for ``biapy.models.unetr.UNETR`` kwargs."""
    return {
        "MODEL": {
            "ARCHITECTURE": "unetr",
            "VIT_NUM_HEADS": int(kwargs["num_heads"]),
            "UNETR_VIT_HIDD_MULT": int(kwargs.get("ViT_hidd_mult", -1)),
            "ACTIVATION": str(kwargs.get("decoder_activation", "relu")),
        }
    }
