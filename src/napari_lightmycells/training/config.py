"""Training configurations (dataclasses) with YAML load/save and named presets in ``configs/*.yaml``.

A YAML file is a flat mapping of :class:`TrainConfig` (or :class:`PretrainConfig`) fields, plus an
optional ``augment`` mapping of :class:`~napari_lightmycells.data.augment.AugmentConfig` fields.
Unknown keys are errors, so typos do not go unnoticed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from typing_extensions import Self

from ..devices import PRECISIONS
from ..errors import LightMyCellsError
from ..legacy import RUN_CONFIG_RENAMES, renamed

LOSSES = ("mse", "l1")


class ConfigError(LightMyCellsError):
    """A training configuration is missing, unreadable or invalid."""


@dataclass
class RunConfig:
    """Fields shared by fine-tuning and pretraining runs (sizes are per process)."""

    data: str | None = None  # study folder
    output: str = "runs/train"
    model: str = "unetr_paper"  # preset name (``lightmycells models``)
    resume: str | None = None  # last.pt of an interrupted run
    epochs: int = 100
    max_steps: int | None = None  # stop (resumably) after this many optimiser steps in total
    batch_size: int = 2
    accumulate: int = 1  # micro-batches per optimiser step
    crop_size: int = 1024  # side of the random training crops = the model's image size, pixels
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 10.0
    grad_clip: float | None = None
    normalization: str = "zscore"
    augment: dict[str, Any] = field(default_factory=lambda: {"enabled": True})
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA (when supported), fp32 elsewhere
    channels_last: bool | None = None  # None: on CUDA only
    compile: bool = False
    workers: int = 4
    seed: int = 0
    preview_every: int = 10  # epochs; 0 disables previews
    save_previews: bool = False  # also write previews as PNG + TIFF under <output>/previews

    def validate(self) -> None:
        positive = ("epochs", "batch_size", "accumulate", "crop_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}.")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        if self.max_steps is not None and self.max_steps < 0:
            raise ConfigError(f"max_steps must be >= 0, got {self.max_steps}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/checkpoint-safe dict (tuples become lists)."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        data = renamed(data, RUN_CONFIG_RENAMES)  # configs written before the rename
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown {cls.__name__} field(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}."
            )
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        config = cls(**values)
        config.validate()
        return config

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (``None`` values are ignored) and validated."""
        changes = {key: value for key, value in changes.items() if value is not None}
        config = dataclasses.replace(self, **changes)
        config.validate()
        return config

    def augment_config(self):
        """The :class:`AugmentConfig` described by ``augment``."""
        from ..data.augment import AugmentConfig

        known = {f.name for f in fields(AugmentConfig)}
        unknown = sorted(set(self.augment) - known)
        if unknown:
            raise ConfigError(
                f"Unknown augment field(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}."
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}
        return AugmentConfig(**values)


@dataclass
class TrainConfig(RunConfig):
    """Fine-tuning a UNETR to predict one organelle (defaults follow the paper, see configs/nucleus.yaml)."""

    organelle: str = "Nucleus"
    modality: str | None = None  # None: all modalities (the paper's best setting)
    init_encoder: str | None = None  # MAE / UNETR / BiaPy checkpoint for the encoder weights
    loss: str = "mse"
    patience: int | None = 250  # epochs without validation improvement before stopping; None: never
    val_fraction: float = 0.1
    val_every: int = 1
    focus: str = "random"  # "random": any focus plane per sample (paper); "best": least blurry only
    samples_per_case: int = 1  # training samples drawn per case and epoch

    def validate(self) -> None:
        super().validate()
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}.")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}.")
        if self.focus not in ("random", "best"):
            raise ConfigError(f"focus must be 'random' or 'best', got {self.focus!r}.")


@dataclass
class PretrainConfig(RunConfig):
    """MAE pretraining of the encoder on unlabelled inputs (all modalities and focus planes)."""

    output: str = "runs/pretrain"
    model: str = "mae_paper"
    epochs: int = 800
    batch_size: int = 4
    lr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_epochs: float = 40.0
    samples_per_plane: int = 1
    preview_count: int = 2  # images shown in each reconstruction preview


C = TypeVar("C", bound=RunConfig)


def preset_names() -> list[str]:
    """Names of the YAML presets shipped in ``napari_lightmycells/configs``."""
    folder = resources.files("napari_lightmycells") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_yaml(name_or_path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file, or in the preset of that name."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path}")
        text = path.read_text()
    else:
        preset = resources.files("napari_lightmycells") / "configs" / f"{name_or_path}.yaml"
        if not preset.is_file():
            raise ConfigError(
                f"Unknown preset {name_or_path!r}: choose from {', '.join(preset_names())} or give a YAML file."
            )
        text = preset.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{name_or_path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name_or_path} must hold a mapping of config fields, got {type(data).__name__}.")
    return data


def load_config(name_or_path: str | Path, cls: type[C] = TrainConfig, **overrides: Any) -> C:
    """A config from a YAML file or preset name, with non-``None`` ``overrides`` applied."""
    return cls.from_dict(read_yaml(name_or_path)).replace(**overrides)


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write ``config`` as YAML."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
