"""Write a region of a case as a new LightMyCells case, e.g. to train on part of a field and test on the rest."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .io import read_image, write_ome_tiff
from .study import Case


def write_region_case(
    case: Case, rows: slice, columns: slice, folder: str | Path, case_id: int
) -> list[Path]:
    """Crop every input plane and target of ``case`` to ``[rows, columns]`` and write them to ``folder`` as
    ``image_<case_id>_<modality>_z<k>.ome.tiff`` and ``image_<case_id>_<Organelle>.ome.tiff`` (pixel size
    kept). Existing files are never overwritten."""
    folder = Path(folder)
    modality = case.modality or "BF"
    jobs = [
        (f"image_{case_id}_{modality}_z{k}", plane.path, plane.index) for k, plane in enumerate(case.planes())
    ]
    inputs = len(jobs)
    jobs += [(f"image_{case_id}_{organelle}", path, None) for organelle, path in case.targets.items()]
    taken = [name for name, _, _ in jobs if (folder / f"{name}.ome.tiff").exists()]
    if taken:
        raise DataError(
            f"{folder} already holds {taken[0]}.ome.tiff; choose an empty folder or another case id."
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number, (name, path, index) in enumerate(jobs):
        image = read_image(path)
        data = image.data if index is None else image.data[index]
        crop = data[rows, columns]
        if crop.size == 0:
            raise DataError(f"The region {rows}, {columns} lies outside {path.name} ({data.shape}).")
        written.append(
            write_ome_tiff(
                folder / f"{name}.ome.tiff",
                crop,
                pixel_size=image.pixel_size,
                modality=modality if number < inputs else None,
            )
        )
    return written
