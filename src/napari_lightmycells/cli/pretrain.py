"""``lightmycells pretrain``: MAE self-supervised pretraining of the UNETR encoder on unlabelled images."""

from __future__ import annotations

import argparse

from .progress import ProgressBar
from .train import COMMON_FLAGS, add_run_arguments, report, resolve_config, stop_on_interrupt

PRETRAIN_FLAGS = [
    ("--samples-per-plane", "samples_per_plane", {"type": int}),
    ("--save-previews", "save_previews", {"action": "store_const", "const": True}),
]


def add_parser(sub) -> None:
    from ..training.config import PretrainConfig

    parser = sub.add_parser(
        "pretrain",
        help="MAE pretraining of the encoder on unlabelled images",
        description="Masked-autoencoder pretraining on every input plane of a study (targets not needed); "
        "then `lightmycells train --init-encoder OUTPUT/last.pt`.",
    )
    add_run_arguments(parser, COMMON_FLAGS + PRETRAIN_FLAGS, PretrainConfig)
    parser.set_defaults(command="pretrain")


def run(args: argparse.Namespace) -> int:
    from ..training.config import PretrainConfig
    from ..training.pretrain import pretrain

    config = resolve_config(args, PretrainConfig, COMMON_FLAGS + PRETRAIN_FLAGS, "pretrain")
    with stop_on_interrupt() as stop:
        result = pretrain(
            config,
            callbacks=[ProgressBar("pretrain", bar=not args.no_progress)],
            stop=stop,
            overwrite=args.overwrite,
        )
    return report(result)
