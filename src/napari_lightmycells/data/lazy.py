"""Images bigger than memory: TIFFs read on demand and predictions written as OME-Zarr.

A TIFF bigger than :data:`LAZY_READ_ABOVE` is memory-mapped (uncompressed files) or opened through
tifffile's zarr store (compressed or tiled files), so prediction reads one tile at a time. A prediction
bigger than :data:`ZARR_OUTPUT_ABOVE` is written tile by tile into an OME-Zarr folder
(``<name>.ome.zarr``, written under a temporary name and moved into place when complete).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile

from ..errors import DataError
from ..files import TMP_SUFFIX
from ..memory import image_budget
from .io import Image, _open_tiff, _read_metadata, modality_from_name, read_image, squeezed_axes

MIB = 2**20
LAZY_READ_ABOVE = 256 * MIB  # input pixels, bytes
ZARR_OUTPUT_ABOVE = 512 * MIB  # float32 prediction, bytes
ZARR_CHUNK = 1024


def open_image(path: str | os.PathLike) -> Image:
    """:func:`.io.read_image` for images up to :data:`LAZY_READ_ABOVE` (and the memory budget of
    :mod:`..memory`); bigger ones with lazy ``data``."""
    path = Path(path)
    with _open_tiff(path) as tif:
        series = tif.series[0]
        shape, axes, dtype = tuple(series.shape), series.axes, np.dtype(series.dtype)
        meta = _read_metadata(tif)
    budget = image_budget()[0]  # read_image refuses images over it: those are read lazily too
    if math.prod(shape) * dtype.itemsize <= min(LAZY_READ_ABOVE, budget or LAZY_READ_ABOVE):
        return read_image(path)
    keep, kept_axes = squeezed_axes(shape, axes, path.name)
    if dtype.kind not in "uif":
        raise DataError(f"{path.name} has unsupported pixel type {dtype}: use uint8, uint16 or float.")
    try:
        data = tifffile.memmap(path, mode="r").reshape([shape[i] for i in keep])
    except ValueError:  # compressed or not contiguous: read through zarr
        import zarr

        data = SqueezedView(zarr.open(tifffile.imread(path, aszarr=True, series=0, level=0), mode="r"), keep)
    modality = meta.pop("modality", None) or modality_from_name(path.name)
    return Image(data=data, axes=kept_axes, path=path, modality=modality, **meta)


class SqueezedView:
    """An array without its singleton axes (``keep``: the axes kept), read on demand."""

    def __init__(self, array, keep: list[int]):
        self.array, self.keep = array, list(keep)
        self.shape = tuple(array.shape[i] for i in self.keep)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        full = [0] * len(self.array.shape)
        for axis, item in zip(self.keep, key):
            full[axis] = item
        return np.asarray(self.array[tuple(full)])


def prediction_is_big(shape: tuple[int, ...]) -> bool:
    """Whether a float32 prediction of ``shape`` goes to OME-Zarr rather than memory and OME-TIFF."""
    return math.prod(shape) * 4 > ZARR_OUTPUT_ABOVE


@contextmanager
def ome_zarr_output(path: Path, shape: tuple[int, ...], reference: Image | None, name: str) -> Iterator:
    """A zeroed float32 zarr array to fill, saved as the OME-Zarr ``path`` when the block exits without error
    (an existing ``path`` is replaced then); on error the partial folder is removed."""
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX))
    try:
        group = zarr.open_group(tmp, mode="w")
        chunks = (1,) * (len(shape) - 2) + (ZARR_CHUNK, ZARR_CHUNK)
        array = group.create_array("0", shape=shape, chunks=chunks, dtype="float32", fill_value=0)
        yield array
        pixel = list(reference.pixel_size) if reference and reference.pixel_size else [1.0, 1.0]
        z_step = [reference.z_step if reference and reference.z_step else 1.0] if len(shape) == 3 else []
        axes = [{"name": "z", "type": "space", "unit": "micrometer"}] if len(shape) == 3 else []
        axes += [{"name": axis, "type": "space", "unit": "micrometer"} for axis in "yx"]
        transform = [{"type": "scale", "scale": z_step + pixel}]
        write_multiscales_metadata(
            group, [{"path": "0", "coordinateTransformations": transform}], axes=axes, name=name
        )
        _replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_folder(source: Path, target: Path) -> None:
    """Move ``source`` onto ``target``; an existing ``target`` folder is moved aside first, then deleted."""
    if not target.exists():
        os.replace(source, target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX))
    os.replace(target, old / "old")
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)
