"""Learning-rate schedule: linear warm-up then half-cycle cosine decay, updated every optimiser step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_factor: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Rises linearly to 1 over ``warmup_steps`` (``(step + 1) / warmup_steps``, never 0), then decays
    along a half cosine to ``min_factor`` at ``total_steps`` and stays there.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Schedule as a callable object, so ``LambdaLR.state_dict()`` records its fields."""

    def __init__(self, warmup_steps: int, total_steps: int, min_factor: float):
        self.warmup_steps, self.total_steps, self.min_factor = warmup_steps, total_steps, min_factor

    def __call__(self, step: int) -> float:
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.min_factor)


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, lr: float, min_lr: float = 0.0
) -> LambdaLR:
    """A per-step :class:`LambdaLR` going ``0 -> lr`` (warm-up) then ``lr -> min_lr`` (cosine)."""
    min_factor = min(max(min_lr / lr, 0.0), 1.0) if lr > 0 else 0.0
    return LambdaLR(optimizer, WarmupCosine(max(warmup_steps, 0), max(total_steps, 1), min_factor))


def replan(scheduler: LambdaLR, total_steps: int) -> None:
    """Give a resumed :func:`warmup_cosine` schedule a new length: from its current step on, the learning
    rate follows the curve of a run planned with ``total_steps`` from the start (more epochs: the cosine
    is stretched instead of the extra epochs running at ``min_lr``)."""
    schedule = scheduler.lr_lambdas[0]
    schedule.total_steps = max(total_steps, 1)
    groups = scheduler.optimizer.param_groups
    for group, base_lr in zip(groups, scheduler.base_lrs, strict=True):
        group["lr"] = base_lr * schedule(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in groups]
