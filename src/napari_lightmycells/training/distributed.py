"""Multi-process training with ``torchrun``: environment detection, process group, reductions.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them training runs in one
process. The backend is NCCL on CUDA and Gloo on CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import select_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_from_environment() -> DistEnv:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (single process when unset)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    return DistEnv(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


@contextmanager
def session(device_name: str = "auto") -> Iterator[tuple[DistEnv, torch.device]]:
    """Detect the job layout, pick this process's device and join the process group if needed.

    A process group created here is destroyed on exit; one created by the caller is left alone.
    """
    env = env_from_environment()
    device = select_device(device_name)
    if device.type == "cuda" and env.enabled:
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    created = env.enabled and not dist.is_initialized()
    if created:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
        logger.info("Joined a %s process group as rank %d of %d", backend, env.rank, env.world_size)
    try:
        yield env, device
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, env: DistEnv, device: torch.device) -> torch.Tensor:
    """Element-wise sum over processes, reduced on ``device`` and returned on the CPU."""
    if not env.enabled:
        return values
    values = values.to(device, copy=True)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def any_process(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on at least one (e.g. a stop request)."""
    if not env.enabled:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)]), env, device).item() > 0)
