"""Training configurations: validated pydantic models, YAML load/save, named presets in ``configs/*.yaml``.

A YAML file is a flat mapping of :class:`TrainConfig` (or :class:`PretrainConfig`) fields, plus an
optional ``augment`` mapping of :class:`~napari_lightmycells.data.augment.AugmentConfig` fields.
Every value is checked when a config is made (types, ranges, and across fields: the crop a multiple of
the model's token size, ``min_lr <= lr``, a precision the device can run, ...): a wrong one is a
:class:`ConfigError` with a one-line message, before anything starts. Unknown keys are errors, so typos
do not go unnoticed. The field descriptions are the CLI's ``-h`` texts.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import Self

from ..constants import canonical_modality, canonical_organelle
from ..errors import LightMyCellsError
from ..legacy import RUN_CONFIG_RENAMES, renamed


class ConfigError(LightMyCellsError):
    """A training configuration is missing, unreadable or invalid."""


DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class RunConfig(BaseModel):
    """Fields shared by fine-tuning and pretraining runs (sizes are per process)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    data: str | None = Field(None, description="study folder")
    output: str = Field("runs/train", description="run folder: config.yaml, best.pt, last.pt, metrics.csv")
    model: str = Field("unetr_paper", description="model preset (see `lightmycells models`)")
    resume: str | None = Field(None, description="last.pt of an interrupted run to continue")
    epochs: int = Field(100, ge=1, description="epochs in total (a resumed run re-plans its schedule to it)")
    max_steps: int | None = Field(
        None, ge=0, description="stop (resumably) after this many optimiser steps in total"
    )
    batch_size: int = Field(2, ge=1, description="samples per micro-batch and process")
    accumulate: int = Field(1, ge=1, description="micro-batches per optimiser step")
    crop_size: int = Field(
        1024,
        ge=2,
        description="side of the random training crops = the model's image size (pixels), "
        "a multiple of the model's token size",
    )
    lr: float = Field(1e-4, gt=0, description="peak learning rate (after warm-up)")
    min_lr: float = Field(1e-6, ge=0, description="learning rate at the end of the cosine decay")
    weight_decay: float = Field(0.02, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_epochs: float = Field(10.0, ge=0, description="linear warm-up length (epochs, may be fractional)")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    normalization: Literal["zscore", "percentile"] = Field(
        "zscore", description="per-image input normalisation"
    )
    augment: dict[str, Any] = Field(
        default_factory=lambda: {"enabled": True}, description="AugmentConfig fields (augment.py)"
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA (when supported), fp32 elsewhere; fp16 needs CUDA"
    )
    channels_last: bool | None = Field(None, description="channels-last memory layout (default: on CUDA)")
    compile: bool = Field(False, description="torch.compile the model")
    workers: int = Field(4, ge=0, description="DataLoader worker processes")
    seed: int = Field(0, ge=0, description="random seed")
    preview_every: int = Field(10, ge=0, description="epochs between preview images (0: none)")
    save_previews: bool = Field(
        False, description="also write previews as PNG + TIFF under <output>/previews"
    )

    def __init__(self, **data: Any):
        data = renamed(data, RUN_CONFIG_RENAMES)  # configs written before the rename
        unknown = sorted(set(data) - set(type(self).model_fields))
        if unknown:
            known = ", ".join(sorted(type(self).model_fields))
            raise ConfigError(
                f"Unknown {type(self).__name__} field(s): {', '.join(unknown)}. Known: {known}."
            )
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigError(one_line(error)) from None

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not DEVICE_PATTERN.match(device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
        return device

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"betas must be in [0, 1), got {list(betas)}")
        return betas

    @field_validator("augment")
    @classmethod
    def _known_augmentations(cls, augment: dict[str, Any]) -> dict[str, Any]:
        from ..data.augment import AugmentConfig

        known = {f.name for f in dataclasses.fields(AugmentConfig)}
        unknown = sorted(set(augment) - known)
        if unknown:
            raise ValueError(
                f"unknown augment field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return augment

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr:g} is above lr {self.lr:g}")
        if self.precision == "fp16" and self.device.split(":")[0] in ("cpu", "mps"):
            raise ValueError(f"precision fp16 needs a CUDA GPU, not device {self.device}: use bf16 or fp32")
        token = self._token_size()
        if self.crop_size % token:
            lower, upper = max(token, self.crop_size // token * token), (self.crop_size // token + 1) * token
            raise ValueError(
                f"crop_size {self.crop_size} is not a multiple of the {token}-pixel token size of {self.model}: "
                f"use {lower} or {upper}"
            )
        return self

    def _token_size(self) -> int:
        """Token size of the model preset (a ``ValueError`` naming the choices if it is unknown)."""
        from ..models import UNETR_PRESETS

        return _preset(UNETR_PRESETS, self.model, "UNETR").encoder.token_size

    def validate(self) -> None:
        """Check the current values again (after in-place changes)."""
        type(self)(**self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/checkpoint-safe dict (tuples become lists)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """A config from a stored dict (also one written with old field names)."""
        return cls(**data)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied (``None`` values are ignored)."""
        changes = {key: value for key, value in changes.items() if value is not None}
        return type(self)(**{**self.to_dict(), **changes})

    def augment_config(self):
        """The :class:`AugmentConfig` described by ``augment``."""
        from ..data.augment import AugmentConfig

        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}
        return AugmentConfig(**values)


class TrainConfig(RunConfig):
    """Fine-tuning a UNETR to predict one organelle (defaults follow the paper, see configs/nucleus.yaml)."""

    organelle: str = Field("Nucleus", description="Nucleus, Mitochondria, Tubulin or Actin")
    modality: str | None = Field(None, description="BF, PC or DIC (default: all, the paper's best setting)")
    init_encoder: str | None = Field(
        None, description="MAE / UNETR / BiaPy checkpoint for the encoder weights"
    )
    loss: Literal["mse", "l1"] = Field("mse", description="training loss")
    patience: int | None = Field(
        250, ge=1, description="epochs without a lower validation loss before stopping (default: never)"
    )
    val_fraction: float = Field(0.1, ge=0, lt=1, description="fraction of the cases kept for validation")
    val_every: int = Field(1, ge=1, description="epochs between validations")
    focus: Literal["random", "best"] = Field(
        "random", description="random: any focus plane per sample (the paper); best: the least blurry one"
    )
    samples_per_case: int = Field(1, ge=1, description="training samples drawn per case and epoch")

    @field_validator("organelle")
    @classmethod
    def _canonical_organelle(cls, organelle: str) -> str:
        return canonical_organelle(organelle)

    @field_validator("modality")
    @classmethod
    def _canonical_modality(cls, modality: str | None) -> str | None:
        return None if modality is None else canonical_modality(modality)


class PretrainConfig(RunConfig):
    """MAE pretraining of the encoder on unlabelled inputs (all modalities and focus planes)."""

    output: str = Field("runs/pretrain", description=RunConfig.model_fields["output"].description)
    model: str = Field("mae_paper", description="masked-autoencoder preset (see `lightmycells models`)")
    epochs: int = Field(800, ge=1, description=RunConfig.model_fields["epochs"].description)
    batch_size: int = Field(4, ge=1, description=RunConfig.model_fields["batch_size"].description)
    lr: float = Field(1.5e-4, gt=0, description=RunConfig.model_fields["lr"].description)
    weight_decay: float = Field(0.05, ge=0, description=RunConfig.model_fields["weight_decay"].description)
    betas: tuple[float, float] = Field((0.9, 0.95), description=RunConfig.model_fields["betas"].description)
    warmup_epochs: float = Field(40.0, ge=0, description=RunConfig.model_fields["warmup_epochs"].description)
    samples_per_plane: int = Field(1, ge=1, description="training samples drawn per input plane and epoch")
    preview_count: int = Field(2, ge=1, description="images shown in each reconstruction preview")

    def _token_size(self) -> int:
        from ..models import MAE_PRESETS

        return _preset(MAE_PRESETS, self.model, "MAE").encoder.token_size


def _preset(presets: dict, name: str, kind: str):
    if name not in presets:
        raise ValueError(f"Unknown {kind} preset {name!r}: choose from {', '.join(presets)}")
    return presets[name]


def one_line(error: ValidationError) -> str:
    """A pydantic error as one line: ``field: message`` for each problem."""
    parts = []
    for problem in error.errors(include_url=False):
        message = problem["msg"].removeprefix("Value error, ").rstrip(".")
        where = ".".join(str(part) for part in problem["loc"])
        if problem["type"] != "value_error" and "input" in problem:
            message += f", got {problem['input']!r}"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) + "."


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
