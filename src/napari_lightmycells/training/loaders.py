"""Data loading that can restart in the middle of an epoch and give the very same batches.

The sampler is a :class:`~torch.utils.data.DistributedSampler` (one process or many) that yields
``(index, seed)`` pairs; :class:`SeededItems` seeds torch's generator with ``seed`` while reading the
item, so random planes and crops depend only on (run seed, epoch, position) and not on which worker
reads them or on what was read before. Skipping the first ``start`` positions of an epoch therefore
resumes exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .distributed import DistEnv

_MIX = 1_000_003


class ResumableSampler(DistributedSampler):
    """This process's share of a shuffled epoch as ``(index, seed)`` pairs, optionally from position ``start``."""

    def __init__(self, dataset: Dataset, env: DistEnv, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        for position in range(self.start, len(indices)):
            global_position = position * self.num_replicas + self.rank
            seed = ((self.seed * _MIX + self.epoch) * _MIX + global_position) % 2**63
            yield indices[position], seed

    def __len__(self) -> int:
        return max(super().__len__() - self.start, 0)


class SeededItems(Dataset):
    """Reads ``dataset[index]`` with torch's CPU generator seeded by the sampler's per-item seed."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def train_loader(
    dataset: Dataset, env: DistEnv, batch_size: int, workers: int, seed: int, pin_memory: bool
) -> tuple[DataLoader, ResumableSampler]:
    """Shuffled, resumable loader of full batches and its sampler (call ``set_epoch`` each epoch)."""
    sampler = ResumableSampler(dataset, env, seed)
    loader = DataLoader(
        SeededItems(dataset),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )
    return loader, sampler


def eval_loader(
    dataset: Dataset, env: DistEnv, batch_size: int, workers: int, pin_memory: bool
) -> DataLoader:
    """Every ``world_size``-th item from ``rank`` (no padding, so sums over processes count each item once)."""
    shard = torch.utils.data.Subset(dataset, list(range(env.rank, len(dataset), env.world_size)))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory)


def steps_per_epoch(dataset_size: int, env: DistEnv, batch_size: int, accumulate: int) -> int:
    """Optimiser steps in one epoch (full batches only; leftover micro-batches are skipped)."""
    per_process = -(-dataset_size // env.world_size)  # DistributedSampler pads to equal shares
    return (per_process // batch_size) // accumulate
