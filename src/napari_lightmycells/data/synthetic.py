"""A small synthetic LightMyCells-style study (for tests and demos).

Each case is a field of random elliptical cells. The transmitted-light planes are an optical-thickness
map of the cells (cell body + nucleus + mitochondria), rendered per modality and increasingly
defocused (Gaussian blur) with noise away from the middle plane. Targets are deterministic functions
of the same structure, hence learnable from the in-focus input:

* Nucleus: smoothed nucleus interiors; Mitochondria: small dots in the cytoplasm;
* Tubulin: smoothed cytoplasm; Actin: cell outlines (cortical actin).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..constants import canonical_modality, canonical_organelle
from .io import write_ome_tiff

logger = logging.getLogger(__name__)

PIXEL_SIZE_UM = (0.325, 0.325)


def make_synthetic_study(
    folder: str | Path,
    n_cases: int = 6,
    size: int = 128,
    n_planes: int = 3,
    organelles: tuple[str, ...] = ("Nucleus",),
    modalities: tuple[str, ...] = ("BF",),
    seed: int = 0,
    n_studies: int = 1,
) -> Path:
    """Write ``n_cases`` cases (modalities cycled) as uint16 OME-TIFFs into ``folder`` and return it.

    With ``n_studies > 1`` the cases are spread over ``Study_1 ... Study_n`` subfolders.
    """
    folder = Path(folder)
    organelles = tuple(canonical_organelle(name) for name in organelles)
    modalities = tuple(canonical_modality(name) for name in modalities)
    rng = np.random.default_rng(seed)
    for index in range(n_cases):
        case_id = index + 1
        modality = modalities[index % len(modalities)]
        out = folder / f"Study_{index % n_studies + 1}" if n_studies > 1 else folder
        structure = _cell_structure(size, rng)
        for z, plane in enumerate(_transmitted_light_planes(structure, modality, n_planes, rng)):
            write_ome_tiff(
                out / f"image_{case_id}_{modality}_z{z}.ome.tiff",
                plane,
                pixel_size=PIXEL_SIZE_UM,
                channel_names=(modality,),
                modality=modality,
            )
        for organelle in organelles:
            write_ome_tiff(
                out / f"image_{case_id}_{organelle}.ome.tiff",
                _fluorescence(structure[organelle], rng),
                pixel_size=PIXEL_SIZE_UM,
                channel_names=(organelle,),
            )
    logger.info("Wrote a synthetic study of %d cases to %s", n_cases, folder)
    return folder


def _cell_structure(size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Float maps in [0, 1] of cells, nuclei, mitochondria, cytoplasm and outlines."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cells = np.zeros((size, size), bool)
    nuclei = np.zeros((size, size), bool)
    for _ in range(rng.integers(3, 7)):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(size / 10, size / 5, 2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(angle) + dx * np.sin(angle)) / ry
        v = (-dy * np.sin(angle) + dx * np.cos(angle)) / rx
        radius2 = u**2 + v**2
        cells |= radius2 < 1
        nuclei |= radius2 < 0.4**2
    cytoplasm = cells & ~nuclei
    dots = np.zeros((size, size), np.float32)
    candidates = rng.integers(0, size, (max(size * size // 60, 1), 2))
    inside = candidates[cytoplasm[candidates[:, 0], candidates[:, 1]]]
    dots[inside[:, 0], inside[:, 1]] = 1.0
    sigma = max(size / 256, 0.7)
    outline = cells ^ ndimage.binary_erosion(cells, iterations=max(int(size / 128), 1), border_value=1)
    return {
        "cells": ndimage.gaussian_filter(cells.astype(np.float32), sigma),
        "Nucleus": ndimage.gaussian_filter(nuclei.astype(np.float32), 2 * sigma),
        "Mitochondria": np.clip(ndimage.gaussian_filter(dots, sigma) * 6, 0, 1),
        "Tubulin": ndimage.gaussian_filter(cytoplasm.astype(np.float32), 3 * sigma),
        "Actin": ndimage.gaussian_filter(outline.astype(np.float32), sigma),
    }


def _transmitted_light_planes(
    structure: dict[str, np.ndarray], modality: str, n_planes: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """uint16 planes of one modality, sharpest in the middle and blurrier away from it, with noise."""
    thickness = structure["cells"] + 0.6 * structure["Nucleus"] + 0.4 * structure["Mitochondria"]
    if modality == "BF":
        signal = -thickness
    elif modality == "PC":
        signal = thickness - ndimage.gaussian_filter(thickness, 4)
    else:  # DIC: shear (directional derivative) contrast
        signal = np.gradient(thickness, axis=0) + np.gradient(thickness, axis=1)
        signal = signal / (np.abs(signal).max() + 1e-6)
    best = (n_planes - 1) / 2
    planes = []
    for z in range(n_planes):
        defocus = abs(z - best)
        plane = ndimage.gaussian_filter(signal, 0.5 + 1.5 * defocus) if defocus else signal
        plane = 20000 + 8000 * plane + rng.normal(0, 150, plane.shape)
        planes.append(np.clip(plane, 0, 65535).astype(np.uint16))
    return planes


def _fluorescence(signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint16 fluorescence image: background + signal + mild noise."""
    image = 200 + 4000 * signal + rng.normal(0, 20, signal.shape)
    return np.clip(image, 0, 65535).astype(np.uint16)
