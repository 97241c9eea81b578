"""Discover paired (transmitted light -> fluorescence) cases in a folder.

Two layouts are understood:

* **LightMyCells**: ``image_<id>_<BF|PC|DIC>_z<k>.ome.tiff`` inputs and ``image_<id>_<Organelle>.ome.tiff``
  targets, in one folder or nested ``Study_*`` subfolders.
* **Folders** (users' own data): ``inputs/<name>.tif`` (2D image or Z-stack) and
  ``targets/<organelle>/<name>.tif`` with matching names.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..constants import MODALITIES, ORGANELLES, canonical_modality, canonical_organelle
from ..errors import DataError
from .io import is_tiff, modality_from_name, read_image, read_shape, strip_tiff_suffix

logger = logging.getLogger(__name__)

_SUFFIX = r"\.(?:ome\.)?tiff?$"
INPUT_PATTERN = re.compile(r"^image_(\d+)_(" + "|".join(MODALITIES) + r")_z(\d+)" + _SUFFIX, re.IGNORECASE)
TARGET_PATTERN = re.compile(r"^image_(\d+)_(" + "|".join(ORGANELLES) + r")" + _SUFFIX, re.IGNORECASE)
LAYOUT_HELP = (
    "Expected LightMyCells files (image_<id>_<BF|PC|DIC>_z<k>.ome.tiff and image_<id>_<Organelle>.ome.tiff) "
    "or an inputs/ folder with targets/<organelle>/ folders holding files of the same names."
)


class Plane(NamedTuple):
    """One 2D input plane: a file, and the Z index inside it when the file is a stack."""

    path: Path
    index: int | None = None


@dataclass
class Case:
    """One sample: input planes of one modality (sorted by focus) and its fluorescence targets."""

    case_id: str
    modality: str | None
    inputs: list[Path]
    targets: dict[str, Path] = field(default_factory=dict)
    _planes: list[Plane] | None = field(default=None, repr=False, compare=False)

    def planes(self) -> list[Plane]:
        """Every 2D input plane; Z-stack files are expanded (only file headers are read)."""
        if self._planes is None:
            planes = []
            for path in self.inputs:
                shape = read_shape(path)
                planes += [Plane(path)] if len(shape) == 2 else [Plane(path, z) for z in range(shape[0])]
            self._planes = planes
        return self._planes

    def target(self, organelle: str) -> Path:
        organelle = canonical_organelle(organelle)
        if organelle not in self.targets:
            raise DataError(f"Case {self.case_id} has no {organelle} target; it has {_names(self.targets)}.")
        return self.targets[organelle]


@dataclass(frozen=True)
class StudySummary:
    """Counts describing a study; ``str()`` gives a readable multi-line report."""

    root: Path
    layout: str
    n_cases: int
    n_input_files: int
    n_planes: int
    modalities: dict[str, int]
    organelles: dict[str, int]

    def __str__(self) -> str:
        modalities = ", ".join(f"{name} {count}" for name, count in self.modalities.items()) or "none"
        organelles = ", ".join(f"{name} {count}" for name, count in self.organelles.items()) or "none"
        return (
            f"Study {self.root} ({self.layout} layout)\n"
            f"  cases:        {self.n_cases}\n"
            f"  input files:  {self.n_input_files} ({self.n_planes} planes)\n"
            f"  modalities:   {modalities} (cases)\n"
            f"  organelles:   {organelles} (targets)"
        )


@dataclass
class Study:
    """The cases found in a folder."""

    root: Path
    layout: str
    cases: list[Case]

    def __len__(self) -> int:
        return len(self.cases)

    def organelles(self) -> list[str]:
        found = {organelle for case in self.cases for organelle in case.targets}
        return [organelle for organelle in ORGANELLES if organelle in found]

    def modalities(self) -> list[str]:
        found = {case.modality for case in self.cases}
        return [modality for modality in MODALITIES if modality in found]

    def select(self, organelle: str | None = None, modality: str | None = None) -> Study:
        """Cases of ``modality`` that have an ``organelle`` target.

        Cases without any target raise :class:`DataError` when an organelle is requested (they are
        unpaired inputs); cases with only other organelles are left out.
        """
        cases = self.cases
        if modality is not None:
            modality = _canonical(canonical_modality, modality)
            cases = [case for case in cases if case.modality == modality]
            if not cases:
                raise DataError(
                    f"No {modality} inputs in {self.root}; "
                    f"found modalities: {', '.join(self.modalities()) or 'none'}."
                )
        if organelle is not None:
            organelle = _canonical(canonical_organelle, organelle)
            unpaired = [case for case in cases if not case.targets]
            if unpaired:
                raise DataError(
                    f"{len(unpaired)} input case(s) in {self.root} have no target image, e.g. "
                    f"{unpaired[0].inputs[0].name}. "
                    f"Add the matching {organelle} target or move those inputs out."
                )
            cases = [case for case in cases if organelle in case.targets]
            if not cases:
                raise DataError(
                    f"No {organelle} targets in {self.root}; found organelles: "
                    f"{', '.join(self.organelles()) or 'none'}."
                )
        return replace(self, cases=cases)

    def summary(self) -> StudySummary:
        modalities = Counter(case.modality or "unknown" for case in self.cases)
        organelles = Counter(organelle for case in self.cases for organelle in case.targets)
        return StudySummary(
            root=self.root,
            layout=self.layout,
            n_cases=len(self.cases),
            n_input_files=sum(len(case.inputs) for case in self.cases),
            n_planes=sum(len(case.planes()) for case in self.cases),
            modalities=dict(sorted(modalities.items())),
            organelles={
                organelle: organelles[organelle] for organelle in ORGANELLES if organelles[organelle]
            },
        )

    def validate(self, check_content: bool = False) -> None:
        """Check that planes and targets of each case have the same YX shape (headers only).

        With ``check_content`` the pixels are read too, and empty or constant images raise.
        """
        for case in self.cases:
            shapes = {path: read_shape(path)[-2:] for path in case.inputs}
            for path in case.targets.values():
                shape = read_shape(path)
                if len(shape) != 2:
                    raise DataError(f"Target {path.name} must be a 2D image, got shape {shape}.")
                shapes[path] = shape
            if len(set(shapes.values())) > 1:
                listing = ", ".join(
                    f"{path.name} {'x'.join(map(str, shape))}" for path, shape in shapes.items()
                )
                raise DataError(
                    f"Image shapes disagree in case {case.case_id}: {listing}. "
                    "Inputs and targets of a case must have the same height and width."
                )
            if check_content:
                for path in shapes:
                    check_image_content(read_image(path).data, path.name)


def check_image_content(data: np.ndarray, name: str) -> None:
    """Raise :class:`DataError` for empty, non-finite or constant images."""
    if data.size == 0:
        raise DataError(f"{name} is empty (shape {data.shape}).")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise DataError(f"{name} contains NaN or infinite values; clean or re-export it.")
    if data.min() == data.max():
        raise DataError(
            f"{name} is constant (every pixel is {data.flat[0]}): it holds no information; "
            "remove it from the study."
        )


def discover_study(folder: str | Path, organelle: str | None = None, modality: str | None = None) -> Study:
    """Find the cases in ``folder`` (either layout), optionally keeping one organelle and/or modality."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"Study folder not found: {root}.")
    if (root / "inputs").is_dir():
        study = Study(root, "folders", _discover_folders(root))
    else:
        study = Study(root, "LightMyCells", _discover_lightmycells(root))
    if not study.cases:
        raise DataError(f"No input images found in {root}. {LAYOUT_HELP}")
    logger.debug("Found %d cases in %s", len(study.cases), root)
    return study.select(organelle, modality)


def _discover_lightmycells(root: Path) -> list[Case]:
    inputs: dict[tuple[Path, str], dict[int, Path]] = defaultdict(dict)
    modalities: dict[tuple[Path, str], set[str]] = defaultdict(set)
    targets: dict[tuple[Path, str], dict[str, Path]] = defaultdict(dict)
    for path in sorted(root.rglob("image_*")):
        if match := INPUT_PATTERN.match(path.name):
            key, z = (path.parent, match.group(1)), int(match.group(3))
            if z in inputs[key]:
                raise DataError(
                    f"Two files for the same plane: {inputs[key][z].name} and {path.name}; keep one."
                )
            inputs[key][z] = path
            modalities[key].add(match.group(2).upper())
        elif match := TARGET_PATTERN.match(path.name):
            key, organelle = (path.parent, match.group(1)), canonical_organelle(match.group(2))
            if organelle in targets[key]:
                raise DataError(
                    f"Two {organelle} targets: {targets[key][organelle].name} and {path.name}; keep one."
                )
            targets[key][organelle] = path
    orphans = [paths for key, paths in targets.items() if key not in inputs]
    if orphans:
        example = next(iter(orphans[0].values()))
        raise DataError(
            f"{len(orphans)} target(s) have no input image, e.g. {example} "
            f"(expected inputs named {'_'.join(example.name.split('_')[:2])}_<BF|PC|DIC>_z<k>.ome.tiff)."
        )
    nested = len({parent for parent, _ in inputs}) > 1 or any(parent != root for parent, _ in inputs)
    cases = []
    for key in sorted(inputs, key=lambda k: (str(k[0]), int(k[1]))):
        parent, case_number = key
        if len(modalities[key]) > 1:
            raise DataError(
                f"Case image_{case_number} in {parent} mixes modalities {sorted(modalities[key])}; "
                "a case must have one modality."
            )
        case_id = f"{parent.relative_to(root).as_posix()}/{case_number}" if nested else case_number
        planes = [inputs[key][z] for z in sorted(inputs[key])]
        cases.append(Case(case_id, modalities[key].pop(), planes, dict(targets[key])))
    return cases


def _discover_folders(root: Path) -> list[Case]:
    inputs = {strip_tiff_suffix(p.name): p for p in sorted((root / "inputs").iterdir()) if is_tiff(p)}
    targets: dict[str, dict[str, Path]] = defaultdict(dict)
    targets_dir = root / "targets"
    for folder in sorted(targets_dir.iterdir()) if targets_dir.is_dir() else []:
        if not folder.is_dir():
            continue
        organelle = _canonical(canonical_organelle, folder.name, f"Target folder {folder}")
        for path in sorted(folder.iterdir()):
            if not is_tiff(path):
                continue
            name = strip_tiff_suffix(path.name)
            if name not in inputs:
                raise DataError(
                    f"Target {path} has no input image: "
                    f"expected inputs/{name}.tif (or .ome.tiff) with the same name."
                )
            targets[name][organelle] = path
    return [
        Case(name, modality_from_name(path.name), [path], dict(targets[name]))
        for name, path in inputs.items()
    ]


def _canonical(canonicalize, name: str, what: str | None = None) -> str:
    try:
        return canonicalize(name)
    except ValueError as exc:
        raise DataError(f"{what}: {exc}" if what else str(exc)) from exc


def _names(mapping: dict) -> str:
    return ", ".join(mapping) or "no targets"
