"""Fine-tuning a UNETR to predict one organelle, as in Franco-Barranco et al. (ISBI 2024).

MSE (or L1) in z-score space, AdamW with warm-up + cosine decay, random focus plane per sample,
batched augmentation on the device, validation on every focus plane of 10% of the cases (loss,
PSNR, SSIM, Pearson), early stopping on the validation loss, ``best.pt`` and ``last.pt``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..checkpoint import load_encoder_state
from ..errors import ModelError
from ..events import Callback, StopToken
from ..metrics import batch_pearson, batch_percentile_normalize, batch_psnr, batch_ssim
from ..models import UNETR2D, UNETR_PRESETS, unetr_config
from . import distributed
from .config import ConfigError, TrainConfig
from .engine import Runtime, Task, TrainResult, resumed_model, run
from .loaders import eval_loader

logger = logging.getLogger(__name__)

PredictFn = Callable[[torch.Tensor], torch.Tensor]  # a batch of inputs -> a batch of predictions


def finetune(
    config: TrainConfig,
    callbacks: Iterable[Callback] | None = None,
    stop: StopToken | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train (or resume, with ``config.resume``) a UNETR for ``config.organelle``; an output folder holding
    an earlier run is refused unless ``overwrite``."""

    def build_task(checkpoint: dict[str, Any] | None, runtime: Runtime) -> Task:
        return finetune_task(config, build_unetr(config, checkpoint), *paired_datasets(config), runtime)

    return run(config, build_task, callbacks, stop, overwrite)


def build_unetr(config: TrainConfig, checkpoint: dict[str, Any] | None = None) -> UNETR2D:
    """The model to train: resumed, or a preset (token grid sized to the crop) with an optional encoder init."""
    if checkpoint is not None:
        return resumed_model(checkpoint)
    if config.model not in UNETR_PRESETS:
        raise ConfigError(f"Unknown UNETR preset {config.model!r}: choose from {', '.join(UNETR_PRESETS)}.")
    model = UNETR2D(unetr_config(config.model, crop_size=config.crop_size))
    if config.init_encoder:
        try:
            model.encoder.load_state_dict_resampled(load_encoder_state(config.init_encoder))
        except RuntimeError as error:
            raise ModelError(
                f"Encoder of {config.init_encoder} does not fit the {config.model} preset: {error}"
            ) from None
        logger.info("Encoder initialised from %s", config.init_encoder)
    return model


def paired_datasets(config: TrainConfig) -> tuple[Dataset, Dataset | None]:
    """Training and validation datasets of the study, split by case."""
    from ..data.dataset import PairedDataset, split_cases
    from ..data.study import discover_study

    if not config.data:
        raise ConfigError("No study folder given: set `data` in the config or pass --data.")
    study = discover_study(config.data, organelle=config.organelle, modality=config.modality)
    train_cases, val_cases = split_cases(study.cases, config.val_fraction, config.seed)
    common = {
        "organelle": config.organelle,
        "crop_size": config.crop_size,
        "normalization": config.normalization,
    }
    train = PairedDataset(
        train_cases, mode="train", focus=config.focus, samples_per_case=config.samples_per_case, **common
    )
    val = PairedDataset(val_cases, mode="val", **common) if val_cases else None
    logger.info("%d training and %d validation cases", len(train_cases), len(val_cases))
    return train, val


def finetune_task(
    config: TrainConfig, model: UNETR2D, train_set: Dataset, val_set: Dataset | None, runtime: Runtime
) -> Task:
    """The :class:`Task` the engine runs: loss with on-device augmentation, validation, preview."""
    from ..data.augment import Augmenter

    augment_rng = torch.Generator().manual_seed(config.seed * 1000 + runtime.env.rank)
    augmenter = Augmenter(config.augment_config(), generator=augment_rng)
    criterion = F.mse_loss if config.loss == "mse" else F.l1_loss

    def loss(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        image, target = (runtime.to_device(t) for t in batch)
        image, target = augmenter(image, target)
        return criterion(net(image).float(), target.float())

    evaluate = None
    if val_set is not None:
        loader = eval_loader(val_set, runtime.env, config.batch_size, config.workers, runtime.pin_memory)

        def evaluate(net: nn.Module) -> dict[str, float]:
            net.eval()
            with torch.no_grad(), runtime.autocast():
                return evaluate_predictions(net, loader, runtime, config.loss)

    modality = (
        (config.modality,)
        if config.modality
        else tuple(sorted({c.modality for c in train_set.cases if c.modality}))
    )
    return Task(
        name="train",
        model=model,
        dataset=train_set,
        loss=loss,
        generators={"augment": augment_rng},
        evaluate=evaluate,
        preview=lambda net: preview_prediction(net, val_set or train_set, runtime),
        val_every=config.val_every,
        monitor="val_loss" if val_set is not None else "train_loss",
        patience=config.patience,
        checkpoint_meta={
            "organelle": train_set.organelle,
            "modality": modality,
            "normalization": config.normalization,
        },
    )


def evaluate_predictions(
    predict: PredictFn, loader: DataLoader, runtime: Runtime, loss: str = "mse"
) -> dict[str, float]:
    """Mean loss and PSNR (z-score space), SSIM (percentile-normalised, as the challenge) and Pearson
    of ``predict`` over every sample of ``loader`` (summed over processes)."""
    sums = torch.zeros(5, dtype=torch.float64)
    for image, target in loader:
        image, target = runtime.to_device(image), runtime.to_device(target)
        pred, target = predict(image).float(), target.float()
        error = (pred - target).abs() if loss == "l1" else (pred - target).square()
        per_sample = torch.stack(
            [
                error.flatten(1).mean(1).double(),
                batch_psnr(pred, target),
                batch_ssim(batch_percentile_normalize(pred), batch_percentile_normalize(target)),
                batch_pearson(pred, target),
            ]
        )
        sums[:4] += per_sample.sum(1).cpu()
        sums[4] += image.shape[0]
    sums = distributed.all_reduce_sum(sums, runtime.env, runtime.device)
    n = max(float(sums[4]), 1.0)
    return {
        name: float(value) / n
        for name, value in zip(("val_loss", "val_psnr", "val_ssim", "val_pearson"), sums)
    }


def baseline_metrics(val_set: Dataset, runtime: Runtime, batch_size: int = 8) -> dict[str, dict[str, float]]:
    """Validation metrics of the trivial predictors in z-score space: the input itself, and zeros (the mean)."""
    loader = eval_loader(val_set, runtime.env, batch_size, 0, False)
    return {
        "identity": evaluate_predictions(lambda x: x, loader, runtime),
        "mean": evaluate_predictions(torch.zeros_like, loader, runtime),
    }


def preview_prediction(net: nn.Module, dataset: Dataset, runtime: Runtime) -> dict[str, Any]:
    """Input, target and prediction of the dataset's first sample, as 2D numpy arrays."""
    image, target = dataset[0]
    net.eval()
    with torch.no_grad(), runtime.autocast():
        pred = net(runtime.to_device(image[None])).float()
    return {
        "input": image[0].numpy(),
        "target": target[0].numpy(),
        "prediction": pred[0, 0].cpu().numpy(),
    }
