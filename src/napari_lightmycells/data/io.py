"""Read and write microscopy images (OME-TIFF and plain TIFF) with their physical metadata."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from ..constants import MODALITIES, canonical_modality
from ..errors import DataError
from ..files import atomic_write

logger = logging.getLogger(__name__)

TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")

# OME-XML ContrastMethod values for our modalities (and back).
_CONTRAST_METHOD = {"BF": "Brightfield", "PC": "Phase", "DIC": "DIC"}
_MODALITY_OF_CONTRAST = {value.lower(): key for key, value in _CONTRAST_METHOD.items()}
# Micrometres per unit, for OME PhysicalSize*Unit and ImageJ/TIFF resolution units.
_UM_PER_UNIT = {
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "\\u00b5m": 1.0,
    "μm": 1.0,
    "nm": 1e-3,
    "pm": 1e-6,
    "å": 1e-4,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}
_MODALITY_IN_NAME = re.compile(r"(?:^|[_\-. ])(" + "|".join(MODALITIES) + r")(?:[_\-. ]|$)")
_MODALITY_IN_TEXT = re.compile(r"modality\s*[=:]\s*[\"']?([A-Za-z_]+)", re.IGNORECASE)
# Axes that tifffile uses for pages of unknown meaning: treated as a Z-stack.
_GENERIC_STACK_AXES = "QIZ"


@dataclass
class Image:
    """A 2D (``YX``) or 3D (``ZYX``, ``CYX`` or ``TYX``) image and what is known about it."""

    data: np.ndarray
    axes: str = "YX"
    pixel_size: tuple[float, float] | None = None  # (y, x) in µm
    z_step: float | None = None  # µm
    channel_names: tuple[str, ...] = ()
    modality: str | None = None
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """File name without its TIFF suffix (``"image"`` when not read from a file)."""
        return strip_tiff_suffix(self.path.name) if self.path else "image"

    @property
    def is_stack(self) -> bool:
        return self.data.ndim == 3


def strip_tiff_suffix(filename: str) -> str:
    """``"a.ome.tiff"`` -> ``"a"``; names without a TIFF suffix are returned unchanged."""
    lower = filename.lower()
    for suffix in TIFF_SUFFIXES:
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def is_tiff(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(TIFF_SUFFIXES)


def modality_from_name(filename: str) -> str | None:
    """Modality (BF, PC, DIC) written as a token in a file name, e.g. ``image_12_BF_z0.ome.tiff``."""
    match = _MODALITY_IN_NAME.search(strip_tiff_suffix(Path(filename).name))
    return match.group(1) if match else None


def read_image(path: str | os.PathLike) -> Image:
    """Read a TIFF/OME-TIFF as a 2D or 3D array with pixel size, channel names and modality.

    Singleton axes are squeezed (``TCZYX`` -> ``ZYX`` or ``YX``); RGB images and images with more
    than one non-spatial axis raise :class:`DataError`.
    """
    path = Path(path)
    with _open_tiff(path) as tif:
        series = tif.series[0]
        check_memory_budget(path.name, series.shape, series.dtype)
        data = series.asarray()
        axes = series.axes
        meta = _read_metadata(tif)
    data, axes = _squeeze_axes(data, axes, path.name)
    if data.dtype.kind not in "uif":
        raise DataError(f"{path.name} has unsupported pixel type {data.dtype}: use uint8, uint16 or float.")
    modality = meta.pop("modality", None) or modality_from_name(path.name)
    image = Image(data=data, axes=axes, path=path, modality=modality, **meta)
    logger.debug("Read %s: shape %s %s, pixel size %s", path.name, data.shape, axes, image.pixel_size)
    return image


def read_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Squeezed shape of an image without loading its pixels (same rules as :func:`read_image`)."""
    path = Path(path)
    with _open_tiff(path) as tif:
        series = tif.series[0]
        shape, axes = series.shape, series.axes
    keep = _kept_axes(shape, axes, path.name)
    return tuple(shape[i] for i in keep)


def check_memory_budget(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse (before reading) an image whose pixels would exceed the memory budget of :mod:`..memory`."""
    from ..memory import BUDGET_ENV, GIB, image_budget

    size = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
    budget, reason = image_budget()
    if budget is not None and size > budget:
        raise DataError(
            f"{name} is too large to load at once: {'x'.join(map(str, shape))} {np.dtype(dtype)} pixels take "
            f"{size / GIB:.1f} GiB, over the {budget / GIB:.1f} GiB budget ({reason}). Crop or bin it, or raise "
            f"the budget with {BUDGET_ENV}=<GiB>."
        )


@contextlib.contextmanager
def _open_tiff(path: Path) -> Iterator[tifffile.TiffFile]:
    """An open :class:`tifffile.TiffFile`; missing, corrupt or unreadable files raise :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"Image file not found: {path}. Check the path.")
    try:
        with tifffile.TiffFile(path) as tif:
            yield tif
    except DataError:
        raise
    except MemoryError:
        raise DataError(
            f"Not enough memory to read {path.name}; close other programs, crop or bin the image, "
            "or run on a machine with more memory."
        ) from None
    except Exception as exc:  # tifffile raises many kinds of errors for corrupt files
        raise DataError(
            f"Cannot read {path.name}: {exc or type(exc).__name__}. "
            "The file is not a valid TIFF or is damaged; re-export it as TIFF/OME-TIFF."
        ) from exc


def _kept_axes(shape: tuple[int, ...], axes: str, name: str) -> list[int]:
    """Indices of the axes kept after squeezing; raises for RGB and >3D images."""
    if len(axes) != len(shape) or not axes.endswith(("YX", "YXS")):
        raise DataError(f"{name} has an unsupported axis layout {axes!r} {shape}; expected ...YX.")
    if "S" in axes and shape[axes.index("S")] > 1:
        raise DataError(
            f"{name} is an RGB/multi-sample image {shape}; convert it to a single-channel grayscale image."
        )
    keep = [i for i, (ax, n) in enumerate(zip(axes, shape)) if ax in "YX" or (n > 1 and ax != "S")]
    if len(keep) > 3:
        dims = ", ".join(f"{axes[i]}={shape[i]}" for i in keep)
        raise DataError(
            f"{name} has more than 3 non-singleton dimensions ({dims}); "
            "split it into single-channel 2D images or Z-stacks."
        )
    if any(shape[i] == 0 for i in keep):
        raise DataError(f"{name} is empty (shape {shape}).")
    return keep


def squeezed_axes(shape: tuple[int, ...], axes: str, name: str) -> tuple[list[int], str]:
    """The axes kept after squeezing and their names (a generic stack axis is called ``Z``)."""
    keep = _kept_axes(shape, axes, name)
    kept = "".join(axes[i] for i in keep)
    if len(kept) == 3 and kept[0] in _GENERIC_STACK_AXES:
        kept = "Z" + kept[1:]
    return keep, kept


def _squeeze_axes(data: np.ndarray, axes: str, name: str) -> tuple[np.ndarray, str]:
    keep, kept = squeezed_axes(data.shape, axes, name)
    return data.reshape([data.shape[i] for i in keep]), kept


def _read_metadata(tif: tifffile.TiffFile) -> dict:
    if tif.is_ome and tif.ome_metadata:
        meta = _parse_ome(tif.ome_metadata)
    else:
        meta = _parse_plain_tiff(tif)
    return meta


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_ome(xml: str) -> dict:
    """Pixel size, Z step, channel names and modality from the first OME-XML Image."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        logger.warning("Ignoring unreadable OME-XML metadata: %s", exc)
        return {}
    pixels = next((el for el in root.iter() if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        return {}
    meta: dict = {}
    size_x = _physical_size(pixels, "X")
    size_y = _physical_size(pixels, "Y")
    if size_x is not None or size_y is not None:
        meta["pixel_size"] = (size_y or size_x, size_x or size_y)
    meta["z_step"] = _physical_size(pixels, "Z")
    channels = [el for el in pixels if _local(el.tag) == "Channel"]
    meta["channel_names"] = tuple(ch.get("Name", "") for ch in channels if ch.get("Name"))
    candidates = [ch.get("ContrastMethod", "") for ch in channels] + list(meta["channel_names"])
    image_el = next((el for el in root.iter() if _local(el.tag) == "Image"), None)
    if image_el is not None:
        candidates.append(image_el.get("Name", ""))
        description = next((el.text for el in image_el if _local(el.tag) == "Description"), None)
        candidates += _modality_hints(description or "")
    meta["modality"] = _first_modality(candidates)
    return meta


def _physical_size(pixels: ET.Element, axis: str) -> float | None:
    value = pixels.get(f"PhysicalSize{axis}")
    if value is None:
        return None
    unit = pixels.get(f"PhysicalSize{axis}Unit", "µm").lower()
    factor = _UM_PER_UNIT.get(unit)
    if factor is None:
        logger.warning("Ignoring physical size in unknown unit %r", unit)
        return None
    size = float(value) * factor
    return size if size > 0 else None


def _parse_plain_tiff(tif: tifffile.TiffFile) -> dict:
    """Pixel size from ImageJ metadata or centimetre resolution tags; modality from the description."""
    page = tif.pages.first
    meta: dict = {}
    imagej = tif.imagej_metadata or {}
    unit = str(imagej.get("unit", "")).lower()
    resolution_unit = page.tags.valueof("ResolutionUnit")
    if unit in _UM_PER_UNIT:
        um_per_unit = _UM_PER_UNIT[unit]
    elif resolution_unit == tifffile.RESUNIT.CENTIMETER:
        um_per_unit = 1e4
    else:  # inch (usually a meaningless 72 dpi default) or no unit: unknown pixel size
        um_per_unit = None
    x_res, y_res = page.tags.valueof("XResolution"), page.tags.valueof("YResolution")
    if um_per_unit and x_res and y_res and x_res[0] and y_res[0]:
        meta["pixel_size"] = (um_per_unit * y_res[1] / y_res[0], um_per_unit * x_res[1] / x_res[0])
        if imagej.get("spacing"):
            meta["z_step"] = float(imagej["spacing"]) * um_per_unit
    meta["modality"] = _first_modality(_modality_hints(page.description or ""))
    return meta


def _modality_hints(description: str) -> list[str]:
    hints = [match.group(1) for match in _MODALITY_IN_TEXT.finditer(description)]
    if description.lstrip().startswith("{"):
        try:
            value = json.loads(description).get("modality")
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str):
            hints.append(value)
    return hints


def _first_modality(candidates: list[str]) -> str | None:
    for text in candidates:
        if not text:
            continue
        if text.lower() in _MODALITY_OF_CONTRAST:
            return _MODALITY_OF_CONTRAST[text.lower()]
        try:
            return canonical_modality(text)
        except ValueError:
            continue
    return None


def write_ome_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    pixel_size: tuple[float, float] | None = None,
    z_step: float | None = None,
    channel_names: tuple[str, ...] | list[str] = (),
    modality: str | None = None,
    dtype: np.dtype | str | None = None,
) -> Path:
    """Atomically write a ``YX`` or ``ZYX`` array as OME-TIFF with physical metadata (sizes in µm).

    The file is written to a temporary file in the same folder and moved into place, so an existing
    file is never left half-written.
    """
    path = Path(path)
    array = np.asarray(data if dtype is None else np.asarray(data).astype(dtype, copy=False))
    if array.ndim not in (2, 3) or array.size == 0:
        raise DataError(
            f"Cannot write {path.name}: expected a non-empty 2D or 3D array, got shape {array.shape}."
        )
    axes = "YX" if array.ndim == 2 else "ZYX"
    metadata: dict = {"axes": axes}
    if pixel_size is not None:
        size_y, size_x = (float(v) for v in pixel_size)
        metadata.update(
            PhysicalSizeX=size_x, PhysicalSizeXUnit="µm", PhysicalSizeY=size_y, PhysicalSizeYUnit="µm"
        )
    if z_step is not None and array.ndim == 3:
        metadata.update(PhysicalSizeZ=float(z_step), PhysicalSizeZUnit="µm")
    channel: dict = {}
    if channel_names:
        channel["Name"] = next(iter(channel_names))
    if modality:
        channel["ContrastMethod"] = _CONTRAST_METHOD[canonical_modality(modality)]
    if channel:
        metadata["Channel"] = channel
    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, array, ome=True, metadata=metadata))
    return path


def write_prediction(
    path: str | os.PathLike, prediction: np.ndarray, reference: Image | None, organelle: str
) -> Path:
    """Write a prediction as float32 OME-TIFF carrying the input image's pixel size and Z step."""
    return write_ome_tiff(
        path,
        prediction,
        pixel_size=reference.pixel_size if reference else None,
        z_step=reference.z_step if reference else None,
        channel_names=(organelle,),
        dtype=np.float32,
    )
