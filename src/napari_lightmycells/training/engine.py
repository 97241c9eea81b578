"""The optimisation loop shared by fine-tuning and MAE pretraining.

One :class:`Trainer` runs epochs of optimiser steps (with gradient accumulation, autocast and an
optional GradScaler), validates, keeps the best and the last checkpoints, stops early, emits progress
events, honours a :class:`~napari_lightmycells.events.StopToken` before every step and resumes
exactly from ``last.pt`` (mid-epoch included).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import card_from_checkpoint, read_checkpoint, save_checkpoint, unwrap
from ..devices import autocast_dtype
from ..errors import CheckpointError, ModelError
from ..events import Callback, Reporter, StopToken
from ..models import build_model
from . import distributed, rng
from .config import RunConfig, save_config
from .loaders import ResumableSampler, steps_per_epoch, train_loader
from .metrics_log import MetricsLog
from .previews import save_previews
from .resume import check_resume
from .run_folder import BEST, LAST, check_steps_left, prepare_run_folder
from .schedule import replan, warmup_cosine

logger = logging.getLogger(__name__)

MAX_SKIPPED_IN_A_ROW = 10  # NaN/inf losses tolerated in a row before the run is given up
LossFn = Callable[[nn.Module, Any], torch.Tensor]


@dataclass
class Runtime:
    """Where and how a run computes."""

    env: distributed.DistEnv
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move a batch tensor to the device (asynchronously from pinned memory), channels-last if set."""
        tensor = tensor.to(self.device, non_blocking=self.pin_memory)
        return tensor.contiguous(memory_format=torch.channels_last) if self.channels_last else tensor


def make_runtime(config: RunConfig, env: distributed.DistEnv, device: torch.device) -> Runtime:
    """Precision and memory layout of a run on ``device`` (see :func:`distributed.session`)."""
    amp_dtype = autocast_dtype(device, config.precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    return Runtime(env, device, amp_dtype, channels_last)


@dataclass
class LoopState:
    """Counters saved in ``last.pt``; epochs and steps count completed ones."""

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    epoch_loss_sum: float = 0.0
    best: float = math.inf
    best_epoch: int = 0
    bad_validations: int = 0
    early_stopped: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: int = 0  # steps whose loss was NaN/inf: weights left unchanged
    epoch_skipped: int = 0
    skipped_in_a_row: int = 0


@dataclass
class TrainResult:
    """How a run ended: ``status`` is completed, early_stopped, max_steps or stopped."""

    status: str
    epoch: int
    step: int
    best: float
    best_path: Path | None
    last_path: Path | None
    history: list[dict[str, float]]


@dataclass
class Task:
    """What differs between fine-tuning and pretraining."""

    name: str  # "train" or "pretrain"
    model: nn.Module
    dataset: torch.utils.data.Dataset
    loss: LossFn  # (model, CPU batch) -> scalar loss; moves, augments and runs the batch
    generators: dict[str, torch.Generator] = field(default_factory=dict)  # saved with the RNG states
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None  # validation metrics (all processes)
    preview: Callable[[nn.Module], dict[str, Any]] | None = None  # 2D display images (main process)
    val_every: int = 1  # epochs between evaluations
    monitor: str = "train_loss"  # lower is better; drives best.pt and early stopping
    patience: int | None = None
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)  # organelle, modality, normalization


class Trainer:
    """Runs a :class:`Task` as configured; ``run()`` returns a :class:`TrainResult`."""

    def __init__(
        self,
        task: Task,
        config: RunConfig,
        runtime: Runtime,
        callbacks: Iterable[Callback] | None = None,
        stop: StopToken | None = None,
    ):
        self.task, self.config, self.runtime = task, config, runtime
        self.env = runtime.env
        self.output = Path(config.output)
        self.stop = stop or StopToken()
        self.state = LoopState()
        model = task.model.to(runtime.device)
        if runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = torch.optim.AdamW(
            param_groups(model, config.weight_decay), lr=config.lr, betas=tuple(config.betas)
        )
        self.loader, self.sampler = train_loader(
            task.dataset, self.env, config.batch_size, config.workers, config.seed, runtime.pin_memory
        )
        self.steps_per_epoch = steps_per_epoch(
            len(task.dataset), self.env, config.batch_size, config.accumulate
        )
        if self.steps_per_epoch < 1:
            raise ModelError(
                f"{len(task.dataset)} training samples over {self.env.world_size} process(es) do not fill one step of "
                f"{config.batch_size} x {config.accumulate} samples; lower batch_size/accumulate or draw more samples "
                "per case."
            )
        total = config.epochs * self.steps_per_epoch
        self.total_steps = total
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = warmup_cosine(self.optimizer, warmup, total, config.lr, config.min_lr)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype is torch.float16)
        self.train_model = self._wrap(model)
        planned = total if config.max_steps is None else min(total, config.max_steps)
        self.reporter = Reporter(task.name, callbacks if self.env.is_main else None, total=planned)
        self.metrics_log = MetricsLog(self.output) if self.env.is_main else None

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.env.enabled:
            device_ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        return torch.compile(model) if self.config.compile else model

    # -- checkpoints -----------------------------------------------------------------------------
    def load_training_state(self, training_state: dict[str, Any]) -> None:
        """Restore optimiser, schedule, scaler, counters and RNG states saved by :meth:`save`."""
        self.optimizer.load_state_dict(training_state["optimizer"])
        self.scheduler.load_state_dict(training_state["scheduler"])
        planned = self.scheduler.lr_lambdas[0].total_steps
        if planned != self.total_steps:  # epochs changed: the schedule follows the new length
            logger.info("Learning-rate schedule re-planned from %d to %d steps.", planned, self.total_steps)
            replan(self.scheduler, self.total_steps)
        self.scaler.load_state_dict(training_state["scaler"])
        self.state = LoopState(**training_state["loop"])
        states = training_state["rng"]
        if len(states) == self.env.world_size:
            rng.restore(states[self.env.rank], self.task.generators)
        else:
            logger.warning(
                "Resuming on %d process(es) a run saved from %d: random streams restart, the run is not bit-exact.",
                self.env.world_size,
                len(states),
            )

    def save(self, name: str, metrics: dict[str, float], with_state: bool) -> Path | None:
        """Write ``name`` in the output folder (main process only; all processes must call it)."""
        rng_states = self._gather(rng.capture(self.task.generators)) if with_state else None
        path = None
        if self.env.is_main:
            training_state = None
            if with_state:
                training_state = {
                    "config": self.config.to_dict(),
                    "task": self.task.name,
                    "loop": asdict(self.state),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "rng": rng_states,
                }
            extra = {
                "task": self.task.name,
                "epoch": self.state.epoch,
                "step": self.state.step,
                "metrics": metrics,
                "config": self.config.to_dict(),
            }
            path = save_checkpoint(
                self.output / name,
                self.model,
                provenance_extra=extra,
                training_state=training_state,
                **self.task.checkpoint_meta,
            )
            self.reporter.emit(
                "checkpoint", self.state.step, epoch=self.state.epoch, path=str(path), metrics=metrics
            )
        distributed.barrier(self.env)
        return path

    def _gather(self, obj: Any) -> list[Any]:
        if not self.env.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.env.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    # -- loop ------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        config, state = self.config, self.state
        if self.env.is_main:
            save_config(config, self.output / "config.yaml")
        self.reporter.emit(
            "start",
            state.step,
            epoch=state.epoch,
            message=f"{self.task.name}: {config.epochs} epochs of {self.steps_per_epoch} steps "
            f"on {self.env.world_size} x {self.runtime.device.type}, from step {state.step}",
        )
        status = "early_stopped" if state.early_stopped else "completed"
        while state.epoch < config.epochs and not state.early_stopped:
            epoch_start = time.perf_counter()
            batches = self._epoch_batches()
            while state.step_in_epoch < self.steps_per_epoch:
                if distributed.any_process(self.stop.requested, self.env, self.runtime.device):
                    return self._interrupted("stopped")
                if config.max_steps is not None and state.step >= config.max_steps:
                    return self._interrupted("max_steps")
                loss = self._optimizer_step(batches)
                state.step += 1
                state.step_in_epoch += 1
                if math.isfinite(loss):
                    state.epoch_loss_sum += loss
                self.reporter.emit(
                    "step",
                    state.step,
                    epoch=state.epoch + 1,
                    metrics={"loss": loss, "lr": self.scheduler.get_last_lr()[0]},
                )
            self._end_epoch(time.perf_counter() - epoch_start)
            if state.early_stopped:
                status = "early_stopped"
        return self._finish(status)

    def _epoch_batches(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler
        sampler.set_epoch(self.state.epoch)
        sampler.start = self.state.step_in_epoch * self.config.batch_size * self.config.accumulate
        return iter(self.loader)

    def _optimizer_step(self, batches: Iterator[Any]) -> float:
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        accumulate = self.config.accumulate
        total = torch.zeros((), device=self.runtime.device)
        for micro in range(accumulate):
            batch = next(batches)
            last = micro == accumulate - 1
            sync = contextlib.nullcontext() if last or not self.env.enabled else self._no_sync()
            with sync:
                with self.runtime.autocast():
                    loss = self.task.loss(self.train_model, batch)
                self.scaler.scale(loss / accumulate).backward()
            total += loss.detach().float()
        value = total.item() / accumulate
        if distributed.any_process(not math.isfinite(value), self.env, self.runtime.device):
            self._skip_step(value)
        else:
            self.state.skipped_in_a_row = 0
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        return value

    def _skip_step(self, value: float) -> None:
        """A NaN/inf loss: drop the gradients so the weights stay as they were; give up after several."""
        self.optimizer.zero_grad(set_to_none=True)
        state = self.state
        state.skipped_steps += 1
        state.epoch_skipped += 1
        state.skipped_in_a_row += 1
        if state.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise ModelError(
                f"The {self.task.name} loss was {value} for {state.skipped_in_a_row} steps in a row (to step "
                f"{state.step + 1}); lower the learning rate or check the data. last.pt holds the last good epoch."
            )
        self.reporter.emit(
            "log", state.step, epoch=state.epoch + 1,
            message=f"step {state.step + 1}: loss {value}, step skipped (weights unchanged)",
        )  # fmt: skip

    def _no_sync(self) -> contextlib.AbstractContextManager:
        ddp = self.train_model
        while not isinstance(ddp, DistributedDataParallel):
            ddp = ddp._orig_mod
        return ddp.no_sync()

    def _end_epoch(self, seconds: float) -> None:
        state = self.state
        counted = float(state.step_in_epoch - state.epoch_skipped)
        sums = torch.tensor([state.epoch_loss_sum, counted], dtype=torch.float64)
        sums = distributed.all_reduce_sum(sums, self.env, self.runtime.device)
        metrics = {"train_loss": float(sums[0] / max(sums[1], 1.0)), "lr": self.scheduler.get_last_lr()[0]}
        state.epoch += 1
        state.step_in_epoch, state.epoch_loss_sum, state.epoch_skipped = 0, 0.0, 0
        validate_now = self.task.evaluate is not None and state.epoch % self.task.val_every == 0
        if validate_now:
            with self._rng_untouched():
                metrics.update(self.task.evaluate(unwrap(self.model)))
        metrics["epoch_time_s"] = seconds
        state.history.append({"epoch": state.epoch, "step": state.step, **metrics})
        if self.metrics_log is not None:
            self.metrics_log.write(state.history)
        if self.task.monitor in metrics:
            self._track_best(metrics)
        self.save(LAST, metrics, with_state=True)
        self.reporter.emit("epoch", state.step, epoch=state.epoch, metrics=metrics)
        if self._preview_due():
            self.emit_preview()

    def _track_best(self, metrics: dict[str, float]) -> None:
        state, value = self.state, metrics[self.task.monitor]
        if value < state.best:
            state.best, state.best_epoch, state.bad_validations = value, state.epoch, 0
            self.save(BEST, metrics, with_state=False)
            return
        state.bad_validations += 1
        if self.task.patience is not None and state.bad_validations >= self.task.patience:
            state.early_stopped = True
            self.reporter.emit(
                "log",
                state.step,
                epoch=state.epoch,
                message=f"Early stop: {self.task.monitor} has not improved for {state.bad_validations} "
                f"validations (best {state.best:.4g} at epoch {state.best_epoch}).",
            )

    def _preview_due(self) -> bool:
        every = self.config.preview_every
        return (
            bool(every)
            and self.task.preview is not None
            and self.env.is_main
            and (self.state.epoch % every == 0 or self.state.epoch == self.config.epochs)
        )

    def emit_preview(self) -> dict[str, Any]:
        """Preview images of the current model, emitted as a ``preview`` event (main process)."""
        with self._rng_untouched():
            images = self.task.preview(unwrap(self.model))
        path = None
        if self.config.save_previews:
            path = str(save_previews(images, self.output / "previews", self.state.epoch)[0])
        self.reporter.emit("preview", self.state.step, epoch=self.state.epoch, images=images, path=path)
        return images

    def _rng_untouched(self) -> contextlib.AbstractContextManager:
        """Evaluation and previews leave the training random streams as they were (for exact resumes)."""
        devices = [self.runtime.device] if self.runtime.device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def _interrupted(self, status: str) -> TrainResult:
        metrics = {"train_loss_partial": self.state.epoch_loss_sum / max(self.state.step_in_epoch, 1)}
        path = self.save(LAST, metrics, with_state=True)
        reason = "stop requested" if status == "stopped" else f"max_steps={self.config.max_steps} reached"
        self.reporter.emit(
            "log",
            self.state.step,
            epoch=self.state.epoch,
            message=f"{reason}: saved {path or LAST}; resume with --resume.",
        )
        return self._finish(status)

    def _finish(self, status: str) -> TrainResult:
        if self.metrics_log is not None:
            self.metrics_log.close()
        best = self.output / BEST
        result = TrainResult(
            status=status,
            epoch=self.state.epoch,
            step=self.state.step,
            best=self.state.best,
            best_path=best if best.exists() else None,
            last_path=self.output / LAST,
            history=list(self.state.history),
        )
        self.reporter.emit(
            "done",
            self.state.step,
            epoch=self.state.epoch,
            path=str(result.best_path or result.last_path),
            metrics={self.task.monitor: self.state.best},
            message=f"{self.task.name} {status}",
        )
        return result


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms, tokens and embeddings (1-D or frozen parameters)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(("cls_token", "mask_token")) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def run(
    config: RunConfig,
    build_task: Callable[[dict[str, Any] | None, Runtime], Task],
    callbacks: Iterable[Callback] | None = None,
    stop: StopToken | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Run (or resume, with ``config.resume``) the task ``build_task(resume checkpoint or None, runtime)``
    makes, inside a (possibly distributed) session. A non-empty output folder is refused unless the run
    resumes or ``overwrite`` is set; these checks come before any data is read."""
    config.validate()
    checkpoint = read_resume_checkpoint(config.resume) if config.resume else None
    if checkpoint is not None:
        check_resume(checkpoint, config)
        check_steps_left(checkpoint, config)
    if int(os.environ.get("RANK", "0")) == 0:  # the main process owns the output folder
        prepare_run_folder(config, overwrite)
    with distributed.session(config.device) as (env, device):
        runtime = make_runtime(config, env, device)
        rng.seed_everything(config.seed)
        trainer = Trainer(build_task(checkpoint, runtime), config, runtime, callbacks, stop)
        if checkpoint is not None:
            trainer.load_training_state(checkpoint["training_state"])
        return trainer.run()


def resumed_model(checkpoint: dict[str, Any]) -> nn.Module:
    """The model stored in a ``last.pt``, weights loaded."""
    model = build_model(card_from_checkpoint(checkpoint).config)
    model.load_state_dict(checkpoint["state_dict"])
    return model


def read_resume_checkpoint(path: str) -> dict[str, Any]:
    """A ``last.pt`` with its training state (``best.pt`` has none)."""
    checkpoint = read_checkpoint(path)
    if "training_state" not in checkpoint:
        raise CheckpointError(f"{path} holds no training state (a best.pt?); resume from the run's last.pt.")
    return checkpoint


def config_from_checkpoint(path: str, cls: type[RunConfig]) -> RunConfig:
    """The configuration a ``last.pt`` was trained with, set to resume from it. A run stopped by its
    ``max_steps`` continues to its last epoch (the limit is dropped once reached)."""
    state = read_resume_checkpoint(path)["training_state"]
    config = cls.from_dict(state["config"]).replace(resume=str(path))
    if config.max_steps is not None and state["loop"]["step"] >= config.max_steps:
        config = config.model_copy(update={"max_steps": None})
    return config
