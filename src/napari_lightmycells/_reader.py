"""napari reader: TIFF / OME-TIFF files (or a folder of them) as image layers in physical units.

Layers are scaled by the pixel size (and Z step) and named after the case, modality and plane:
``image_12 BF z3`` for one plane, ``image_12 BF (z-stack)`` for a stack. LightMyCells plane files of
one case (``image_12_BF_z0.ome.tiff``, ``..._z1...``) opened together (or as a folder) become one
Z-stack layer; fluorescence targets (``image_12_Nucleus.ome.tiff``) get their organelle's colormap.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from .constants import ORGANELLE_COLORMAPS, canonical_modality, canonical_organelle
from .data.io import Image, is_tiff, read_image, strip_tiff_suffix
from .data.study import INPUT_PATTERN, TARGET_PATTERN

LayerData = tuple[np.ndarray, dict, str]
_MODALITY_TOKEN = re.compile(r"[_\-. ](BF|PC|DIC)(?=[_\-. ]|$)", re.IGNORECASE)


def get_reader(path: str | list[str]):
    """The reader function if every path is a TIFF file or a folder containing TIFF files, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if paths and all(_tiff_files(Path(p)) for p in paths):
        return read_layers
    return None


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Image layers for the TIFF files in ``path`` (files and folders), plane files grouped into stacks."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    files = [file for p in paths for file in _tiff_files(Path(p))]
    stacks: dict[tuple, list[tuple[int, Path]]] = defaultdict(list)
    layers = []
    for file in files:
        match = INPUT_PATTERN.match(file.name)
        if match:
            case_id, modality, z = match.groups()
            stacks[(file.parent, case_id, canonical_modality(modality))].append((int(z), file))
        else:
            layers.append(_single_file_layer(read_image(file)))
    stack_layers = [
        layer
        for (_, case_id, modality), planes in stacks.items()
        for layer in _plane_layers(f"image_{case_id}", modality, sorted(planes))
    ]
    return stack_layers + layers  # transmitted light below the fluorescence targets


def _tiff_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and is_tiff(p) and not p.name.startswith("."))
    return [path] if is_tiff(path) else []


def _plane_layers(case: str, modality: str, planes: list[tuple[int, Path]]) -> list[LayerData]:
    """One Z-stack layer for same-shaped 2D planes of a case; one layer per plane otherwise."""
    images = [read_image(path) for _, path in planes]
    if len(images) > 1 and all(i.data.ndim == 2 and i.data.shape == images[0].data.shape for i in images):
        stack = replace(images[0], data=np.stack([i.data for i in images]), axes="ZYX", modality=modality)
        return [_layer(stack, f"{case} {modality} (z-stack)")]
    return [
        _layer(image, f"{case} {modality} " + (f"z{z}" if image.data.ndim == 2 else "(z-stack)"))
        for (z, _), image in zip(planes, images)
    ]


def _single_file_layer(image: Image) -> LayerData:
    target = TARGET_PATTERN.match(image.path.name)
    if target:
        organelle = canonical_organelle(target.group(2))
        layer = _layer(image, f"image_{target.group(1)} {organelle}")
        layer[1].update(colormap=ORGANELLE_COLORMAPS[organelle], blending="additive")
        layer[1]["metadata"]["organelle"] = organelle
        return layer
    name = _MODALITY_TOKEN.sub("", strip_tiff_suffix(image.path.name))
    name = f"{name} {image.modality}" if image.modality else name
    if image.data.ndim == 3:
        name += " (z-stack)" if image.axes[0] == "Z" else f" ({image.axes})"
    return _layer(image, name)


def _layer(image: Image, name: str) -> LayerData:
    """Layer data tuple with the physical scale and the image's metadata."""
    pixel_size = image.pixel_size or (1.0, 1.0)
    scale = (image.z_step or 1.0, *pixel_size) if image.data.ndim == 3 else pixel_size
    metadata = {
        "modality": image.modality,
        "axes": image.axes,
        "pixel_size_um": image.pixel_size,
        "z_step_um": image.z_step,
        "channel_names": list(image.channel_names),
    }
    return image.data, {"name": name, "scale": tuple(scale), "metadata": metadata}, "image"
