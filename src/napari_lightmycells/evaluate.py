"""Score predictions against fluorescence targets with the challenge metrics and write reports.

Predictions are matched to a study (see :mod:`.data.study`) by name: the input
``image_12_BF_z0.ome.tiff`` predicted as ``image_12_BF_z0_Nucleus.ome.tiff`` (what
:meth:`.inference.predictor.Predictor.predict_files` writes) is compared with the case's Nucleus target.
Reports: ``metrics_per_image.csv`` (one row per prediction) and ``metrics_summary.csv`` /
``metrics_summary.md`` (mean ± std per organelle and metric).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import ORGANELLES, canonical_organelle
from .errors import LightMyCellsError
from .metrics import CHALLENGE_METRICS, HIGHER_IS_BETTER, METRIC_NAMES, NORMALIZATIONS, compute_metrics

logger = logging.getLogger(__name__)

REPORT_FILES = ("metrics_per_image.csv", "metrics_summary.csv", "metrics_summary.md")
ROW_FIELDS = ("image", "organelle", "modality", "status", *METRIC_NAMES, "prediction", "target")


@dataclass(frozen=True)
class Pair:
    """A prediction file, its ground-truth target, and what they show."""

    prediction: Path
    target: Path
    organelle: str
    image: str = ""
    modality: str | None = None


def find_pairs(prediction_dir: str | os.PathLike, study_dir: str | os.PathLike) -> list[Pair]:
    """Every (input plane, organelle target) of the study with the prediction expected for it.

    Predictions that do not exist are kept (their rows report them missing, nothing is dropped silently).
    """
    from .data.io import strip_tiff_suffix
    from .data.study import discover_study

    prediction_dir = Path(prediction_dir)
    pairs = []
    for case in discover_study(study_dir).cases:
        for path in case.inputs:
            stem = strip_tiff_suffix(path.name)
            for organelle, target in case.targets.items():
                prediction = prediction_dir / f"{stem}_{organelle}.ome.tiff"
                pairs.append(Pair(prediction, target, organelle, stem, case.modality))
    return pairs


def evaluate(
    pairs: Iterable[Pair | tuple] | None = None,
    *,
    prediction_dir: str | os.PathLike | None = None,
    study_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    normalization: str = "percentile",
    overwrite: bool = False,
) -> list[dict]:
    """Metric rows for ``pairs`` (``Pair`` or ``(prediction, target, organelle)``), or for the pairs
    found from ``prediction_dir`` + ``study_dir``; writes the reports when ``output_dir`` is given
    (existing reports are replaced only with ``overwrite``; checked before scoring).

    A pair that cannot be scored (missing file, shape mismatch...) gives a row whose ``status`` says why.
    """
    if normalization not in NORMALIZATIONS:
        raise LightMyCellsError(
            f"Unknown metric normalisation {normalization!r}: use one of {', '.join(NORMALIZATIONS)}."
        )
    if output_dir is not None:
        check_report_folder(output_dir, overwrite)
    if pairs is None:
        if prediction_dir is None or study_dir is None:
            raise LightMyCellsError("Give either pairs or both prediction_dir and study_dir to evaluate.")
        pairs = find_pairs(prediction_dir, study_dir)
    rows = [score_pair(_as_pair(pair), normalization) for pair in pairs]
    if output_dir is not None:
        write_reports(rows, output_dir)
    return rows


def score_pair(pair: Pair, normalization: str = "percentile") -> dict:
    """One report row: the metrics of ``pair``, or NaNs and the reason in ``status``."""
    from .data.io import read_image

    row = {
        "image": pair.image or pair.prediction.name,
        "organelle": pair.organelle,
        "modality": pair.modality or "",
        "prediction": str(pair.prediction),
        "target": str(pair.target),
    }
    try:
        metrics = compute_metrics(
            read_image(pair.prediction).data, read_image(pair.target).data, normalization
        )
    except LightMyCellsError as exc:
        logger.warning("Cannot score %s: %s", pair.prediction.name, exc)
        return {**row, "status": str(exc), **dict.fromkeys(METRIC_NAMES, math.nan)}
    return {**row, "status": "ok", **metrics}


def summarize(rows: Iterable[dict]) -> list[dict]:
    """Per organelle: number of scored images and ``<metric>_mean`` / ``<metric>_std`` (scored rows only)."""
    scored = [row for row in rows if row["status"] == "ok"]
    summary = []
    for organelle in sorted({row["organelle"] for row in scored}, key=_organelle_order):
        group = [row for row in scored if row["organelle"] == organelle]
        entry: dict = {"organelle": organelle, "n": len(group)}
        for name in METRIC_NAMES:
            values = np.array([row[name] for row in group], dtype=np.float64)
            entry[f"{name}_mean"] = float(values.mean())
            entry[f"{name}_std"] = float(values.std())
        summary.append(entry)
    return summary


def check_report_folder(output_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """The report folder is writable and holds no earlier reports (unless ``overwrite``)."""
    from .files import ensure_writable_folder

    folder = ensure_writable_folder(output_dir, "Report folder")
    existing = [name for name in REPORT_FILES if (folder / name).exists()]
    if existing and not overwrite:
        raise LightMyCellsError(
            f"{folder} already holds {', '.join(existing)}; pass --overwrite to replace them, or choose another -o."
        )


def write_reports(rows: list[dict], output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the per-image CSV and the summary as CSV and markdown; returns their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    paths = {
        "per_image": _write_csv(output_dir / "metrics_per_image.csv", rows, ROW_FIELDS),
        "summary_csv": _write_csv(
            output_dir / "metrics_summary.csv",
            summary,
            ("organelle", "n", *(f"{name}_{stat}" for name in METRIC_NAMES for stat in ("mean", "std"))),
        ),
        "summary_md": output_dir / "metrics_summary.md",
    }
    paths["summary_md"].write_text(summary_markdown(summary, rows), encoding="utf-8")
    logger.info("Wrote evaluation reports to %s", output_dir)
    return paths


def summary_markdown(summary: list[dict], rows: list[dict] | None = None) -> str:
    """A markdown table of mean ± std per organelle and metric (↑ higher is better, ↓ lower; * scored by the
    challenge for that organelle), plus a count of unscored pairs."""
    headers = [f"{name} {'↑' if name in HIGHER_IS_BETTER else '↓'}" for name in METRIC_NAMES]
    lines = [
        "| Organelle | n | " + " | ".join(headers) + " |",
        "|---|---|" + "---|" * len(METRIC_NAMES),
    ]
    for entry in summary:
        scored = CHALLENGE_METRICS.get(entry["organelle"], ())
        cells = [
            f"{entry[f'{name}_mean']:.4g} ± {entry[f'{name}_std']:.2g}{' *' if name in scored else ''}"
            for name in METRIC_NAMES
        ]
        lines.append(f"| {entry['organelle']} | {entry['n']} | " + " | ".join(cells) + " |")
    if summary:
        lines += ["", "\\* metric of the LightMyCells challenge for that organelle"]
    failed = [row for row in rows or [] if row["status"] != "ok"]
    if failed:
        lines += ["", f"{len(failed)} prediction(s) could not be scored; see metrics_per_image.csv."]
    return "\n".join(lines) + "\n"


def _as_pair(pair: Pair | tuple) -> Pair:
    if isinstance(pair, Pair):
        return pair
    prediction, target, organelle = pair
    return Pair(Path(prediction), Path(target), canonical_organelle(organelle))


def _organelle_order(name: str) -> int:
    return ORGANELLES.index(name) if name in ORGANELLES else len(ORGANELLES)


def _write_csv(path: Path, rows: list[dict], fields: tuple[str, ...]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
