"""Load UNETR and MAE weights trained with BiaPy (``biapy`` 3.x on PyPI).

BiaPy checkpoints are ``torch.save`` dicts with the weights under ``"model"`` and the run's
configuration under ``"cfg"`` (a yacs ``CfgNode`` before BiaPy 3.7, read as a plain dict: see
:data:`BIAPY_PICKLE_GLOBALS`). The architecture is read from the configuration, cross-checked
against the weight shapes (which alone give the token size, widths, depth, kernel size and
decoder normalisation), and the parameter names are mapped onto :class:`UNETR2D`.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import Any

import torch

from ..errors import CheckpointError
from .unetr import UNETR2D, UNETRConfig
from .vit import ViTConfig

ENCODER_KEYS = ("patch_embed.", "cls_token", "pos_embed", "blocks.")
# Allowed beyond torch's weights-only defaults: BiaPy < 3.7 pickles its yacs CfgNode (a dict subclass
# whose instance state is four flags); it is rebuilt as an OrderedDict, never as a yacs object.
BIAPY_PICKLE_GLOBALS = [(OrderedDict, "yacs.config.CfgNode")]
# Present in BiaPy < 3.7 UNETRs but never used by their forward pass (a final LayerNorm).
UNUSED_KEYS = ("norm.",)


def is_biapy_checkpoint(checkpoint: dict[str, Any]) -> bool:
    return (
        isinstance(checkpoint, dict)
        and "model" in checkpoint
        and ("cfg" in checkpoint or "biapy_version" in checkpoint)
    )


def plain_config(cfg: dict) -> dict[str, Any]:
    """A loaded BiaPy configuration (CfgNode read as OrderedDict, or a dict) as nested plain dicts."""
    return {key: plain_config(value) if isinstance(value, dict) else value for key, value in cfg.items()}


def _biapy_decoder_norm(state: dict[str, torch.Tensor]) -> str:
    norm_weights = [k for k in state if re.match(r"two_yellow_layers\.0\.block\.0\.block\.1\.weight$", k)]
    if any(k.endswith("running_mean") for k in state):
        return "bn"
    return "in" if norm_weights else "none"


def unetr_config_from_biapy(cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> UNETRConfig:
    """Our :class:`UNETRConfig` for a BiaPy UNETR, from its ``cfg`` dict and its weights."""
    model_cfg = (cfg or {}).get("MODEL", {})
    if model_cfg.get("ARCHITECTURE", "unetr").lower() != "unetr":
        raise CheckpointError(f"BiaPy checkpoint holds a {model_cfg['ARCHITECTURE']!r} model, not a UNETR.")
    try:
        proj = state["patch_embed.proj.weight"]
        head = state["heads.0.weight"] if "heads.0.weight" in state else state["last_block.weight"]
        first_conv = state["two_yellow_layers.0.block.0.block.0.weight"]
    except KeyError as missing:
        raise CheckpointError(f"Not a BiaPy UNETR state dict: parameter {missing} is missing.") from None
    embed_dim, in_channels, token_size, _ = proj.shape
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    levels = int(math.log2(token_size))
    mult = int(model_cfg.get("UNETR_VIT_HIDD_MULT", -1))
    if mult <= 0:
        mult = max(1, depth // levels)
    # BiaPy < 3.7 names the UNETR decoder's activation UNETR_DEC_ACTIVATION (ACTIVATION is the U-Nets');
    # BiaPy 3.7 uses ACTIVATION for every model.
    activation = str(model_cfg.get("UNETR_DEC_ACTIVATION", model_cfg.get("ACTIVATION", "elu"))).lower()
    return UNETRConfig(
        encoder=ViTConfig(
            in_channels=int(in_channels),
            crop_size=int(grid * token_size),
            token_size=int(token_size),
            embed_dim=int(embed_dim),
            depth=depth,
            num_heads=int(model_cfg.get("VIT_NUM_HEADS", 12)),
            mlp_ratio=float(state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim),
        ),
        out_channels=int(head.shape[0]),
        decoder_filters=int(head.shape[1]),
        kernel_size=int(first_conv.shape[-1]),
        skip_blocks=tuple(mult * i for i in range(1, levels)),
        decoder_norm=_biapy_decoder_norm(state),
        decoder_activation=activation,
    )


def convert_unetr_state_dict(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """Rename BiaPy UNETR parameters to :class:`UNETR2D` names."""
    converted = {}
    for key, value in state.items():
        new = key
        if key.startswith(ENCODER_KEYS):
            new = "encoder." + key
        elif key.startswith("ln_pre."):
            continue  # identity layer outside SAM-3 backbones; holds no weights
        elif key.startswith(UNUSED_KEYS):
            continue
        else:
            yellow = re.match(r"two_yellow_layers\.(\d+)\.(.*)", key)
            if yellow:
                index, rest = int(yellow.group(1)), yellow.group(2)
                target = {levels - 1: "input_skip", levels: "output_fusion"}.get(index, f"fusions.{index}")
                new = f"decoder.{target}.{rest}"
            else:
                for old, ours in (
                    ("mid_blue_block.", "decoder.skip_projections."),
                    ("up_green_layers.", "decoder.upsamplers."),
                    ("bottleneck.", "decoder.bottleneck."),
                    ("heads.0.", "decoder.head."),
                    ("last_block.", "decoder.head."),  # BiaPy < 3.7
                ):
                    if key.startswith(old):
                        new = ours + key[len(old) :]
                        break
                else:
                    raise CheckpointError(f"Unexpected parameter {key!r} in BiaPy UNETR checkpoint.")
            new = new.replace(".block.", ".")
        converted[new] = value
    return converted


def unetr_from_biapy(checkpoint: dict[str, Any]) -> UNETR2D:
    """Build a :class:`UNETR2D` holding the weights of a loaded BiaPy UNETR checkpoint."""
    state = checkpoint["model"]
    config = unetr_config_from_biapy(checkpoint.get("cfg") or {}, state)
    model = UNETR2D(config)
    try:
        model.load_state_dict(convert_unetr_state_dict(state, config.levels), strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"BiaPy UNETR weights do not fit the inferred architecture: {error}") from None
    return model.eval()


def encoder_state_from_biapy_mae(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Encoder weights (our names, without the ``encoder.`` prefix) from a BiaPy MAE checkpoint."""
    state = checkpoint.get("model", checkpoint)
    return {k: v for k, v in state.items() if k.startswith(ENCODER_KEYS)}


def biapy_unetr(config: UNETRConfig) -> torch.nn.Module:
    """BiaPy's own UNETR with the hyper-parameters of ``config`` (for comparisons; needs ``pip install biapy``)."""
    import contextlib
    import io

    from biapy.models.unetr import UNETR

    encoder, skips = config.encoder, config.resolved_skip_blocks()
    if skips != tuple(skips[0] * i for i in range(1, len(skips) + 1)):
        raise ValueError(
            f"BiaPy takes its skips from every n-th encoder block; {skips} is not such a sequence."
        )
    with contextlib.redirect_stdout(io.StringIO()):  # BiaPy prints what it builds
        return UNETR(
            input_shape=(encoder.crop_size, encoder.crop_size, encoder.in_channels),
            patch_size=encoder.token_size,
            embed_dim=encoder.embed_dim,
            depth=encoder.depth,
            num_heads=encoder.num_heads,
            mlp_ratio=encoder.mlp_ratio,
            num_filters=config.decoder_filters,
            output_channels=[config.out_channels],
            output_channel_info=["F"],
            decoder_activation=config.decoder_activation,
            ViT_hidd_mult=skips[0],
            normalization=config.decoder_norm,
            k_size=config.kernel_size,
        )
