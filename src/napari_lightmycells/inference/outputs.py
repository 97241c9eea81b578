"""Which files a batch prediction reads and writes, checked before anything is computed.

Outputs are ``<input stem>_<Organelle>.ome.tiff``, or ``.ome.zarr`` for images too big for memory
(:func:`..data.lazy.prediction_is_big`). With ``skip_existing``, outputs already there are kept and
inputs with all their outputs are skipped (re-runs resume). A plan is refused (one-line :class:`DataError`) when
there is nothing to predict, when two inputs would write the same output, when an output would replace
an organelle image found among the inputs (a target or an earlier prediction: never, even with
``overwrite``), when outputs already exist (unless ``overwrite``), or when the output folder cannot
be written.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..constants import ORGANELLES
from ..data.io import is_tiff, strip_tiff_suffix
from ..errors import DataError
from ..files import ensure_writable_folder, remove_stale_temporaries

logger = logging.getLogger(__name__)

ORGANELLE_IMAGE = "an organelle image"


@dataclass
class PlannedInput:
    """One input file: why it is skipped (``""`` if it is predicted) and, per organelle, its output file."""

    path: Path
    skip_reason: str = ""
    outputs: dict[str, Path] = field(default_factory=dict)


SKIPPED_EXISTING = "outputs exist (--skip-existing)"


def output_name(input_path: Path, organelle: str, suffix: str = ".ome.tiff") -> str:
    return f"{strip_tiff_suffix(input_path.name)}_{organelle}{suffix}"


def output_suffix(input_path: Path) -> str:
    """``.ome.zarr`` for an input whose float32 prediction is too big for memory, else ``.ome.tiff``."""
    from ..data.io import read_shape
    from ..data.lazy import prediction_is_big

    try:
        return ".ome.zarr" if prediction_is_big(read_shape(input_path)) else ".ome.tiff"
    except DataError:  # unreadable: reported when it is predicted
        return ".ome.tiff"


def plan_outputs(
    inputs: Iterable[str | os.PathLike] | str | os.PathLike,
    output_dir: str | os.PathLike,
    organelles: Iterable[str],
    overwrite: bool = False,
    skip_existing: bool = False,
) -> list[PlannedInput]:
    """The inputs (folders expanded) with their outputs in ``output_dir``, after every safety check;
    stale temporaries of earlier interrupted writes of these outputs are removed."""
    output_dir, organelles = Path(output_dir), list(organelles)
    plan = expand_inputs(inputs)
    todo = [item for item in plan if not item.skip_reason]
    if not todo:
        reasons = Counter(item.skip_reason.split(" (")[0] for item in plan)
        found = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
        raise DataError(f"Nothing to predict: no transmitted-light TIFF among the inputs ({found}).")
    for item in todo:
        suffix = output_suffix(item.path)
        item.outputs = {
            organelle: output_dir / output_name(item.path, organelle, suffix) for organelle in organelles
        }
        if skip_existing:
            item.outputs = {organelle: path for organelle, path in item.outputs.items() if not path.exists()}
            item.skip_reason = "" if item.outputs else SKIPPED_EXISTING
    todo = [item for item in todo if not item.skip_reason]
    _check_outputs(plan, todo, output_dir, overwrite)
    ensure_writable_folder(output_dir)
    remove_stale_temporaries(output_dir, [path.name for item in todo for path in item.outputs.values()])
    return plan


def _check_outputs(
    plan: list[PlannedInput], todo: list[PlannedInput], output_dir: Path, overwrite: bool
) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise DataError(f"Output {output_dir} is an existing file; -o/--output must be a folder.")
    writers: dict[Path, list[Path]] = {}
    for item in todo:
        for path in item.outputs.values():
            writers.setdefault(_key(path), []).append(item.path)
    clashes = {path: sources for path, sources in writers.items() if len(sources) > 1}
    if clashes:
        path, sources = next(iter(clashes.items()))
        raise DataError(
            f"{' and '.join(map(str, sources[:2]))} would both be predicted into {path.name}; "
            "predict inputs with the same name into different output folders, or rename one."
        )
    protected = {_key(item.path) for item in plan if item.skip_reason.startswith(ORGANELLE_IMAGE)}
    for item in todo:
        for path in item.outputs.values():
            if _key(path) in protected or _key(path) == _key(item.path):
                raise DataError(
                    f"{path} is {ORGANELLE_IMAGE} among the inputs (a target or an earlier prediction) and is "
                    "never overwritten; write the predictions to another folder with -o."
                )
    existing = [path for item in todo for path in item.outputs.values() if path.exists()]
    if existing and not overwrite:
        raise DataError(
            f"{len(existing)} output(s) already exist in {output_dir} (e.g. {existing[0].name}); "
            "pass --overwrite to replace them, or choose another output folder."
        )
    if existing:
        logger.warning("Replacing %d existing output(s) in %s (--overwrite).", len(existing), output_dir)


def _key(path: Path) -> Path:
    return path.resolve()


def expand_inputs(inputs: Iterable[str | os.PathLike] | str | os.PathLike) -> list[PlannedInput]:
    """Each input; folders give their files, where non-TIFF files and organelle images (targets like
    ``image_3_Nucleus.ome.tiff`` or earlier predictions) are skipped with the reason. A missing input
    is an error."""
    expanded = []
    for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not files:
                expanded.append(PlannedInput(path, "empty folder"))
            expanded += [PlannedInput(p, folder_skip_reason(p)) for p in files]
        elif path.exists():
            expanded.append(PlannedInput(path))
        else:
            raise DataError(f"Input not found: {path}. Check the path.")
    return expanded


def folder_skip_reason(path: Path) -> str:
    """Why a file found in an input folder is not predicted (``""`` if it is)."""
    if not is_tiff(path):
        return "not a TIFF file"
    suffix = strip_tiff_suffix(path.name).rsplit("_", 1)[-1]
    if suffix.lower() in {organelle.lower() for organelle in ORGANELLES}:
        return f"{ORGANELLE_IMAGE} ({suffix}), not a transmitted-light input"
    return ""
