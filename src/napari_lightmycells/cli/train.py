"""``lightmycells train``: fine-tune a UNETR for one organelle (also under ``torchrun`` for several GPUs).

The configuration comes from ``--config FILE.yaml``, ``--preset NAME`` (``configs/NAME.yaml``) or, when
resuming, the interrupted run's ``last.pt``; flags override single fields.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import typing
from collections.abc import Iterator
from typing import Any

from ..events import StopToken
from .progress import ProgressBar, set_log_level

# Flags shared by `train` and `pretrain`: (flag, config field, argparse keywords). The help text and the
# choices come from the config field (its description and Literal type).
COMMON_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--data", "data", {"metavar": "FOLDER"}),
    ("--output", "output", {"metavar": "FOLDER"}),
    ("--model", "model", {"metavar": "PRESET"}),
    ("--epochs", "epochs", {"type": int}),
    ("--max-steps", "max_steps", {"type": int}),
    ("--batch-size", "batch_size", {"type": int}),
    ("--accumulate", "accumulate", {"type": int, "metavar": "N"}),
    ("--crop-size", "crop_size", {"type": int, "metavar": "PX"}),
    ("--lr", "lr", {"type": float}),
    ("--min-lr", "min_lr", {"type": float}),
    ("--weight-decay", "weight_decay", {"type": float}),
    ("--warmup-epochs", "warmup_epochs", {"type": float}),
    ("--device", "device", {}),
    ("--precision", "precision", {}),
    ("--workers", "workers", {"type": int}),
    ("--seed", "seed", {"type": int}),
    ("--preview-every", "preview_every", {"type": int, "metavar": "EPOCHS"}),
    ("--resume", "resume", {"metavar": "LAST_PT"}),
]

TRAIN_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--organelle", "organelle", {}),
    ("--modality", "modality", {}),
    ("--init-encoder", "init_encoder", {"metavar": "CKPT"}),
    ("--val-fraction", "val_fraction", {"type": float}),
    ("--patience", "patience", {"type": int, "metavar": "EPOCHS"}),
    ("--loss", "loss", {}),
    ("--samples-per-case", "samples_per_case", {"type": int}),
    ("--focus", "focus", {}),
]


class DeprecatedAlias(argparse.Action):
    """An old flag name: sets the same field as ``new_flag`` and warns on stderr."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated, use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_run_arguments(
    parser: argparse.ArgumentParser, flags: list[tuple[str, str, dict[str, Any]]], config_class
) -> None:
    """``--config``/``--preset`` plus one overriding flag per field of ``config_class``, described by it."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="YAML", help="configuration file")
    source.add_argument("--preset", help="configuration preset (file name in napari_lightmycells/configs)")
    for flag, field, kwargs in flags:
        parser.add_argument(
            flag, dest=field, **{"default": None, **field_help(config_class, field), **kwargs}
        )
    parser.add_argument(
        "--patch-size",
        dest="crop_size",
        type=int,
        action=DeprecatedAlias,
        new_flag="--crop-size",
        default=None,
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--compile", dest="compile", action="store_true", default=None, help="torch.compile the model"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an output folder holding an earlier one (replaced)",
    )
    parser.add_argument("--no-augment", action="store_true", help="disable data augmentation")
    parser.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")


def field_help(config_class, field: str) -> dict[str, Any]:
    """argparse ``help`` (the field's description) and, for Literal fields, ``choices``."""
    info = config_class.model_fields[field]
    choices = (
        typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else None
    )
    return {"help": info.description, **({"choices": choices} if choices else {})}


def add_parser(sub) -> None:
    from ..training.config import TrainConfig

    parser = sub.add_parser(
        "train",
        help="fine-tune a UNETR for one organelle",
        description="Fine-tune a UNETR for one organelle. Several GPUs/nodes: "
        "torchrun --nproc_per_node N -m napari_lightmycells.cli train ...",
    )
    add_run_arguments(parser, COMMON_FLAGS + TRAIN_FLAGS, TrainConfig)
    parser.set_defaults(command="train")


def resolve_config(args: argparse.Namespace, cls, flags, default_preset: str):
    """Config from --config, --preset, the resumed checkpoint, or ``default_preset``; then flag overrides."""
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun, only rank 0 logs
        set_log_level(logging.WARNING)
    from ..training.config import load_config
    from ..training.engine import config_from_checkpoint

    if args.config or args.preset:
        config = load_config(args.config or args.preset, cls)
    elif args.resume:
        config = config_from_checkpoint(args.resume, cls)
    else:
        config = load_config(default_preset, cls)
    overrides = {field: getattr(args, field) for _, field, _ in flags}
    overrides["compile"] = args.compile
    config = config.replace(**overrides)
    if args.no_augment:
        config = config.replace(augment={**config.augment, "enabled": False})
    return config


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[StopToken]:
    """A StopToken requested by the first Ctrl-C or SIGTERM (SLURM, ``docker stop``): the run saves
    last.pt and can be resumed; a second one aborts."""
    stop = StopToken()

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping after this step, saving last.pt (again to abort)...", file=sys.stderr)
        stop.request()

    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {signum: signal.signal(signum, handler) for signum in signals}
    except ValueError:  # not the main thread
        yield stop
        return
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def report(result) -> int:
    """Exit status of a finished run (130 when stopped by the user)."""
    if result.status == "stopped":
        print(f"stopped at step {result.step}; resume with --resume {result.last_path}", file=sys.stderr)
        return 130
    return 0


def run(args: argparse.Namespace) -> int:
    from ..training.config import TrainConfig
    from ..training.finetune import finetune

    config = resolve_config(args, TrainConfig, COMMON_FLAGS + TRAIN_FLAGS, "nucleus")
    with stop_on_interrupt() as stop:
        result = finetune(
            config,
            callbacks=[ProgressBar("train", bar=not args.no_progress)],
            stop=stop,
            overwrite=args.overwrite,
        )
    return report(result)
