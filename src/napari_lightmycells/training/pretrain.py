"""MAE pretraining of the ViT encoder on unlabelled transmitted-light images (every modality and plane).

The paper pretrains once with grid masking of half the tokens and reuses the encoder for the four
organelle models: ``lightmycells train --init-encoder <output>/last.pt``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..events import Callback, StopToken
from ..models import MAE2D, MAE_PRESETS, mae_config
from .config import ConfigError, PretrainConfig
from .engine import Runtime, Task, TrainResult, resumed_model, run

logger = logging.getLogger(__name__)


def pretrain(
    config: PretrainConfig,
    callbacks: Iterable[Callback] | None = None,
    stop: StopToken | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Pretrain (or resume, with ``config.resume``) an MAE; its checkpoints initialise UNETR encoders. An
    output folder holding an earlier run is refused unless ``overwrite``."""

    def build_task(checkpoint: dict[str, Any] | None, runtime: Runtime) -> Task:
        dataset, modalities = unlabelled_dataset(config)
        return pretrain_task(config, build_mae(config, checkpoint), dataset, runtime, modalities)

    return run(config, build_task, callbacks, stop, overwrite)


def build_mae(config: PretrainConfig, checkpoint: dict[str, Any] | None = None) -> MAE2D:
    """The MAE to train: resumed, or a preset whose token grid matches the crop size."""
    if checkpoint is not None:
        return resumed_model(checkpoint)
    if config.model not in MAE_PRESETS:
        raise ConfigError(f"Unknown MAE preset {config.model!r}: choose from {', '.join(MAE_PRESETS)}.")
    preset = mae_config(config.model)
    return MAE2D(replace(preset, encoder=replace(preset.encoder, crop_size=config.crop_size)))


def unlabelled_dataset(config: PretrainConfig) -> tuple[Dataset, tuple[str, ...]]:
    """Random crops of every input plane of the study (targets are not needed), and its modalities."""
    from ..data.dataset import UnlabelledDataset
    from ..data.study import discover_study

    if not config.data:
        raise ConfigError("No image folder given: set `data` in the config or pass --data.")
    study = discover_study(config.data)
    dataset = UnlabelledDataset(
        study.cases,
        crop_size=config.crop_size,
        normalization=config.normalization,
        samples_per_plane=config.samples_per_plane,
    )
    return dataset, tuple(study.modalities())


def pretrain_task(
    config: PretrainConfig, model: MAE2D, dataset: Dataset, runtime: Runtime, modalities: tuple[str, ...] = ()
) -> Task:
    """The :class:`Task` the engine runs: masked reconstruction loss and reconstruction previews."""
    from ..data.augment import Augmenter

    augment_rng = torch.Generator().manual_seed(config.seed * 1000 + runtime.env.rank)
    augmenter = Augmenter(config.augment_config(), generator=augment_rng)

    def loss(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        image, _ = augmenter(runtime.to_device(batch))
        return net(image).loss

    preview_images = fixed_samples(dataset, config.preview_count, config.seed)
    return Task(
        name="pretrain",
        model=model,
        dataset=dataset,
        loss=loss,
        generators={"augment": augment_rng},
        preview=lambda net: reconstruction_preview(net, preview_images, runtime),
        checkpoint_meta={"modality": modalities, "normalization": config.normalization},
    )


def fixed_samples(dataset: Dataset, count: int, seed: int) -> torch.Tensor:
    """``count`` crops chosen once per run (the same every preview), as a (count, 1, P, P) batch."""
    count = min(max(count, 1), len(dataset))
    samples = []
    with torch.random.fork_rng(devices=[]):
        for index in range(count):
            torch.manual_seed(seed + index)
            samples.append(dataset[index * len(dataset) // count])
    return torch.stack(samples)


def reconstruction_preview(net: MAE2D, images: torch.Tensor, runtime: Runtime) -> dict[str, np.ndarray]:
    """Input, masked input and reconstruction of ``images``, each a 2D montage (samples side by side)."""
    net.eval()
    with torch.no_grad(), runtime.autocast():
        views = net.reconstruct(runtime.to_device(images))
    shown = {"input": images, "masked": views["masked"], "reconstruction": views["reconstruction"]}
    return {name: _side_by_side(batch) for name, batch in shown.items()}


def _side_by_side(batch: torch.Tensor) -> np.ndarray:
    planes = batch.detach().float().cpu()[:, 0]
    return torch.cat(list(planes), dim=-1).numpy()
