"""``lightmycells models``: list model presets with their parameter counts."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    parser = sub.add_parser("models", help="list model presets and their parameter counts")
    parser.add_argument("--name", help="only this preset")
    parser.add_argument(
        "--biapy",
        action="store_true",
        help="also count BiaPy's UNETR of the same config (needs `pip install biapy`)",
    )


def biapy_parameter_count(config) -> int:
    """Parameters of BiaPy's UNETR built with ``config`` (a :class:`UNETRConfig`)."""
    from ..models.biapy import biapy_unetr

    return sum(p.numel() for p in biapy_unetr(config).parameters())


def run(args: argparse.Namespace) -> int:
    from ..models import MAE_PRESETS, UNETR_PRESETS, count_parameters, create_model

    names = [args.name] if args.name else [*UNETR_PRESETS, *MAE_PRESETS]
    print(f"{'preset':<22} {'parameters':>14}{'  BiaPy UNETR' if args.biapy else ''}  architecture")
    for name in names:
        model = create_model(name)
        cfg = model.config
        enc = cfg.encoder
        arch = f"ViT {enc.embed_dim}d/{enc.depth}L/{enc.num_heads}H, {enc.token_size}px tokens"
        biapy = ""
        if name in UNETR_PRESETS:
            arch += (
                f"; decoder {cfg.decoder_filters} filters, k={cfg.kernel_size}, {cfg.decoder_norm} norm,"
                f" skips {cfg.resolved_skip_blocks()}"
            )
            if args.biapy:
                biapy = f"  {biapy_parameter_count(cfg):>11,}"
        else:
            arch += f"; MAE decoder {cfg.decoder_embed_dim}d/{cfg.decoder_depth}L, {cfg.mask_type} masking"
            biapy = "  " + " " * 11 if args.biapy else ""
        print(f"{name:<22} {count_parameters(model):>14,}{biapy}  {arch}")
    return 0
