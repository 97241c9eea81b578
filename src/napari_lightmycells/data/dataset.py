"""Torch datasets over study cases: paired (input plane -> organelle) crops and unlabelled crops.

* Training: each ``__getitem__`` picks a random focus plane of the case (or its best focus) and a random
  ``crop_size`` crop.
* Validation: every (plane, target) pair is covered by a fixed grid of ``crop_size`` tiles (the last
  tile of a row/column is aligned to the image border), so validation is deterministic, sees whole
  images and batches like training crops (which fixed-size ViT encoders need).

Images smaller than the crop are mirror padded (``numpy`` ``reflect``, repeated as often as needed).
Inputs and targets are normalised per image (statistics of the whole image, applied to the crop).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..constants import canonical_organelle
from ..errors import DataError
from .focus import best_focus_index
from .io import read_image, read_shape
from .normalize import NormStats, compute_stats
from .study import Case, Plane, check_image_content

logger = logging.getLogger(__name__)


def split_cases(
    cases: Sequence[Case], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Case], list[Case]]:
    """Deterministic ``(train, val)`` split by case (a case's planes never end up in both)."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"Validation fraction must be in [0, 1), got {val_fraction}.")
    ids = [case.case_id for case in cases]
    if len(set(ids)) != len(ids):
        raise DataError("Case ids are not unique; cannot split by case.")
    n_val = min(max(round(len(cases) * val_fraction), 1 if val_fraction > 0 else 0), len(cases) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(cases))[: max(n_val, 0)].tolist())
    train = [case for i, case in enumerate(cases) if i not in chosen]
    val = [case for i, case in enumerate(cases) if i in chosen]
    return train, val


def mirror_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad the last two axes to at least ``height x width`` by mirroring, evenly on both sides.

    ``reflect`` is repeated as needed, so a 10x10 image can be padded to 64x64.
    """
    pad_h, pad_w = max(height - image.shape[-2], 0), max(width - image.shape[-1], 0)
    if not pad_h and not pad_w:
        return image
    pads = [(0, 0)] * (image.ndim - 2) + [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)]
    return np.pad(image, pads, mode="reflect")


def tile_origins(size: int, tile: int) -> list[int]:
    """Start offsets of ``tile``-sized tiles covering ``size`` (last one aligned to the end)."""
    if size <= tile:
        return [0]
    count = math.ceil(size / tile)
    return [min(i * tile, size - tile) for i in range(count)]


class ImageCache:
    """Small LRU cache of decoded images and their normalisation statistics, keyed by plane."""

    def __init__(self, max_items: int = 8, normalization: str = "zscore"):
        self.max_items = max_items
        self.normalization = normalization
        self._arrays: OrderedDict = OrderedDict()
        self._stats: dict[Plane, NormStats] = {}

    def get(self, plane: Plane) -> tuple[np.ndarray, NormStats]:
        """The 2D array of ``plane`` (original dtype) and its normalisation statistics."""
        data = self._load(plane.path)
        array = data if plane.index is None else data[plane.index]
        if array.ndim != 2:
            raise DataError(f"{plane.path.name} is a stack of shape {data.shape}; expected a 2D plane here.")
        if plane not in self._stats:
            name = plane.path.name if plane.index is None else f"{plane.path.name} (plane {plane.index})"
            check_image_content(array, name)
            try:
                self._stats[plane] = compute_stats(array, self.normalization)
            except DataError as exc:
                raise DataError(f"{name}: {exc}") from exc
        return array, self._stats[plane]

    def _load(self, path) -> np.ndarray:
        if path in self._arrays:
            self._arrays.move_to_end(path)
            return self._arrays[path]
        data = read_image(path).data
        self._arrays[path] = data
        while len(self._arrays) > self.max_items:
            self._arrays.popitem(last=False)
        return data

    def __getstate__(self) -> dict:
        # Workers start with an empty cache instead of copies of big arrays.
        return {**self.__dict__, "_arrays": OrderedDict(), "_stats": {}}


def _crop(array: np.ndarray, stats: NormStats, y: int, x: int, size: int) -> torch.Tensor:
    """Normalised float32 (1, size, size) tensor of ``array[y:y+size, x:x+size]`` (mirror padded)."""
    crop = mirror_pad(array, size, size)[y : y + size, x : x + size]
    out = (crop.astype(np.float32) - np.float32(stats.offset)) / np.float32(stats.scale)
    return torch.from_numpy(np.ascontiguousarray(out))[None]


def _random_origin(shape: tuple[int, int], size: int) -> tuple[int, int]:
    max_y, max_x = max(shape[0] - size, 0), max(shape[1] - size, 0)
    y, x = torch.randint(0, max_y + 1, ()).item(), torch.randint(0, max_x + 1, ()).item()
    return int(y), int(x)


class PairedDataset(Dataset):
    """``(input, target)`` float32 tensors of shape (1, P, P) for one organelle.

    ``mode="train"``: item ``i`` is case ``i % len(cases)`` with a random plane (``focus="random"``) or
    its least blurry plane (``focus="best"``) and a random crop; ``samples_per_case`` repeats cases in
    an epoch. ``mode="val"``: every plane of every case, tiled with a fixed grid of crops.
    Randomness comes from torch's generator (seeded per DataLoader worker; ``torch.manual_seed`` in tests).
    """

    def __init__(
        self,
        cases: Sequence[Case],
        organelle: str,
        crop_size: int = 256,
        mode: str = "train",
        normalization: str = "zscore",
        focus: str = "random",
        samples_per_case: int = 1,
        cache_size: int = 8,
    ):
        if mode not in ("train", "val"):
            raise ValueError(f"mode must be 'train' or 'val', got {mode!r}")
        if focus not in ("random", "best"):
            raise ValueError(f"focus must be 'random' or 'best', got {focus!r}")
        self.organelle = canonical_organelle(organelle)
        missing = [case.case_id for case in cases if self.organelle not in case.targets]
        if missing:
            raise DataError(f"Case(s) {', '.join(missing[:5])} have no {self.organelle} target.")
        if not cases:
            raise DataError(f"No cases to build a {mode} dataset for {self.organelle}.")
        self.cases = list(cases)
        self.crop_size = int(crop_size)
        self.mode = mode
        self.focus = focus
        self.samples_per_case = samples_per_case
        self.cache = ImageCache(cache_size, normalization)
        self._best_plane: dict[str, Plane] = {}
        self._items = self._validation_items() if mode == "val" else []

    def _validation_items(self) -> list[tuple[Case, Plane, int, int]]:
        items = []
        for case in self.cases:
            height, width = _plane_shape(case.planes()[0])
            for plane in case.planes():
                for y in tile_origins(height, self.crop_size):
                    items += [(case, plane, y, x) for x in tile_origins(width, self.crop_size)]
        return items

    def __len__(self) -> int:
        return len(self._items) if self.mode == "val" else len(self.cases) * self.samples_per_case

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "val":
            case, plane, y, x = self._items[index]
        else:
            case = self.cases[index % len(self.cases)]
            plane = self._train_plane(case)
            y = x = None
        image, image_stats = self.cache.get(plane)
        target, target_stats = self.cache.get(Plane(case.targets[self.organelle]))
        if image.shape != target.shape:
            raise DataError(
                f"Shapes disagree in case {case.case_id}: {plane.path.name} is {image.shape} but "
                f"{case.targets[self.organelle].name} is {target.shape}."
            )
        if y is None:
            y, x = _random_origin(image.shape, self.crop_size)
        size = self.crop_size
        return _crop(image, image_stats, y, x, size), _crop(target, target_stats, y, x, size)

    def _train_plane(self, case: Case) -> Plane:
        planes = case.planes()
        if self.focus == "random":
            return planes[int(torch.randint(0, len(planes), ()).item())]
        if case.case_id not in self._best_plane:
            arrays = [self.cache.get(plane)[0] for plane in planes]
            self._best_plane[case.case_id] = planes[best_focus_index(arrays)]
        return self._best_plane[case.case_id]


class UnlabelledDataset(Dataset):
    """Random normalised (1, P, P) crops of every input plane (all modalities), e.g. for MAE pretraining."""

    def __init__(
        self,
        cases: Sequence[Case],
        crop_size: int = 256,
        normalization: str = "zscore",
        samples_per_plane: int = 1,
        cache_size: int = 8,
    ):
        self.planes = [plane for case in cases for plane in case.planes()]
        if not self.planes:
            raise DataError("No input planes to build an unlabelled dataset from.")
        self.crop_size = int(crop_size)
        self.samples_per_plane = samples_per_plane
        self.cache = ImageCache(cache_size, normalization)

    def __len__(self) -> int:
        return len(self.planes) * self.samples_per_plane

    def __getitem__(self, index: int) -> torch.Tensor:
        image, stats = self.cache.get(self.planes[index % len(self.planes)])
        y, x = _random_origin(image.shape, self.crop_size)
        return _crop(image, stats, y, x, self.crop_size)


def _plane_shape(plane: Plane) -> tuple[int, int]:
    return tuple(read_shape(plane.path)[-2:])
