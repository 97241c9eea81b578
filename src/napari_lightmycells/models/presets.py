"""Named model configurations: the paper's, its tubulin variant, and small ones for CPUs and tests."""

from __future__ import annotations

from dataclasses import replace

from .mae import MAEConfig
from .unetr import UNETRConfig
from .vit import ViTConfig

PAPER_ENCODER = ViTConfig(crop_size=1024, token_size=32, embed_dim=768, depth=12, num_heads=12)
SMALL_ENCODER = ViTConfig(crop_size=256, token_size=16, embed_dim=192, depth=6, num_heads=3)
TINY_ENCODER = ViTConfig(crop_size=64, token_size=8, embed_dim=48, depth=4, num_heads=2)

UNETR_PRESETS: dict[str, UNETRConfig] = {
    # Franco-Barranco et al. 2024: skips from blocks 3, 6, 9, 12; 32 filters doubling; 9x9 kernels; BatchNorm in the
    # decoder (BiaPy 3.4.3, which trained the paper's models: MODEL.BATCH_NORMALIZATION = True). Every preset keeps
    # that default: in eval mode BatchNorm is a fixed affine map, so each tile is normalised alike (no seams).
    "unetr_paper": UNETRConfig(
        encoder=PAPER_ENCODER, decoder_filters=32, kernel_size=9, skip_blocks=(3, 6, 9, 12)
    ),
    # Their best tubulin model: 16 filters, 7x7 kernels.
    "unetr_paper_tubulin": UNETRConfig(
        encoder=PAPER_ENCODER, decoder_filters=16, kernel_size=7, skip_blocks=(3, 6, 9, 12)
    ),
    # Trains on a laptop CPU in minutes; same design at a quarter of the width.
    "unetr_small": UNETRConfig(encoder=SMALL_ENCODER, decoder_filters=16, kernel_size=5),
    # For tests: a forward pass on 64x64 takes milliseconds.
    "unetr_tiny": UNETRConfig(encoder=TINY_ENCODER, decoder_filters=8, kernel_size=3),
}

MAE_PRESETS: dict[str, MAEConfig] = {
    "mae_paper": MAEConfig(
        encoder=PAPER_ENCODER, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16
    ),
    "mae_small": MAEConfig(
        encoder=SMALL_ENCODER, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4
    ),
    "mae_tiny": MAEConfig(encoder=TINY_ENCODER, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2),
}

# Fine-tuning preset per organelle, as in the paper.
ORGANELLE_PRESETS = {
    "Nucleus": "unetr_paper",
    "Mitochondria": "unetr_paper",
    "Tubulin": "unetr_paper_tubulin",
    "Actin": "unetr_paper",
}


def unetr_config(name: str, **encoder_overrides) -> UNETRConfig:
    """A UNETR preset, optionally with encoder fields changed (e.g. ``crop_size=512``)."""
    if name not in UNETR_PRESETS:
        raise KeyError(f"Unknown UNETR preset {name!r}: choose from {', '.join(UNETR_PRESETS)}")
    config = UNETR_PRESETS[name]
    return (
        replace(config, encoder=replace(config.encoder, **encoder_overrides)) if encoder_overrides else config
    )


def mae_config(name: str, **overrides) -> MAEConfig:
    """An MAE preset, optionally with top-level fields changed (e.g. ``mask_type="random"``)."""
    if name not in MAE_PRESETS:
        raise KeyError(f"Unknown MAE preset {name!r}: choose from {', '.join(MAE_PRESETS)}")
    return replace(MAE_PRESETS[name], **overrides)
