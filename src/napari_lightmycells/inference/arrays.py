"""Images bigger than memory: planes of stacks and small samples read on demand from zarr, dask or tifffile.

An image is *lazy* when it slices like numpy but is not a numpy array (a zarr or dask array, a tifffile
store opened with zarr): prediction then reads one tile at a time. A *multiscale* image is a list of
such arrays, full resolution first (napari's multiscale layers, OME-Zarr pyramids).
"""

from __future__ import annotations

import math

import numpy as np

# Samples (normalisation statistics, focus) read at most this many pixels per axis.
SAMPLE_SIDE = 2048


def is_lazy(image) -> bool:
    """Whether ``image`` is an array read on demand (a memory map too) rather than a numpy array in memory."""
    if isinstance(image, np.ndarray):
        return isinstance(image, np.memmap)
    return all(hasattr(image, attribute) for attribute in ("shape", "dtype", "__getitem__"))


class PlaneView:
    """Plane ``index`` of a ``ZYX`` array, as a 2D array whose pixels are read and written on demand."""

    ndim = 2

    def __init__(self, array, index: int):
        self.array, self.index = array, index
        self.shape = tuple(array.shape[1:])
        self.dtype = array.dtype

    def __getitem__(self, key):
        return self.array[(self.index, *(key if isinstance(key, tuple) else (key,)))]

    def __setitem__(self, key, value) -> None:
        self.array[(self.index, *(key if isinstance(key, tuple) else (key,)))] = value


def plane_of(array, index: int):
    """Plane ``index`` of a stack without reading it (numpy: a view)."""
    return array[index] if isinstance(array, np.ndarray) else PlaneView(array, index)


def sample(image, side: int = SAMPLE_SIDE) -> np.ndarray:
    """``image`` (2D, or ``ZYX``) read with a stride that keeps at most ``side`` pixels per axis: the whole
    image when it is small enough."""
    step = max(1, math.ceil(max(image.shape[-2:]) / side))
    return np.asarray(image[..., ::step, ::step])


def coarsest_sample(levels: list, side: int = SAMPLE_SIDE) -> np.ndarray:
    """A sample of a multiscale image from its finest level no larger than ``side`` (else the coarsest), among
    the levels that keep every plane of a stack."""
    same_planes = [level for level in levels if tuple(level.shape[:-2]) == tuple(levels[0].shape[:-2])]
    small = [level for level in same_planes if max(level.shape[-2:]) <= side]
    return sample(small[0] if small else same_planes[-1], side)
