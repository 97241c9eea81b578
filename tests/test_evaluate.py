import csv
import math

import numpy as np
import pytest

from napari_lightmycells.data.io import read_image, write_ome_tiff
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.evaluate import evaluate, find_pairs, summarize
from napari_lightmycells.metrics import METRIC_NAMES, compute_metrics


@pytest.fixture
def study(tmp_path):
    return make_synthetic_study(
        tmp_path / "study", n_cases=2, size=48, n_planes=2, organelles=("Nucleus", "Actin")
    )


def _predict_with_targets(study, prediction_dir, noise=0.0):
    """Write 'predictions' = target (+ noise) for every input plane and organelle, like predict_files would."""
    rng = np.random.default_rng(0)
    for pair in find_pairs(prediction_dir, study):
        target = read_image(pair.target).data.astype(np.float32)
        write_ome_tiff(pair.prediction, target + rng.normal(0, noise, target.shape).astype(np.float32))


def test_evaluate_study_writes_per_image_and_summary_reports(study, tmp_path):
    predictions = tmp_path / "pred"
    _predict_with_targets(study, predictions, noise=0.0)
    missing = next(predictions.glob("image_2_*_z1_Actin.ome.tiff"))
    missing.unlink()
    rows = evaluate(prediction_dir=predictions, study_dir=study, output_dir=tmp_path / "report")
    assert len(rows) == 2 * 2 * 2  # cases x planes x organelles
    ok = [row for row in rows if row["status"] == "ok"]
    assert len(ok) == 7
    assert all(row["MAE"] == 0 and row["PCC"] == pytest.approx(1) and row["PSNR"] == math.inf for row in ok)
    failed = [row for row in rows if row["status"] != "ok"]
    assert (
        failed[0]["image"] == missing.name.replace("_Actin.ome.tiff", "")
        and "not found" in failed[0]["status"]
    )
    assert math.isnan(failed[0]["SSIM"])

    with open(tmp_path / "report" / "metrics_per_image.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 8 and {"image", "organelle", "modality", *METRIC_NAMES} <= set(table[0])
    markdown = (tmp_path / "report" / "metrics_summary.md").read_text()
    assert "| Nucleus | 4 |" in markdown and "| Actin | 3 |" in markdown and "could not be scored" in markdown
    assert "| MAE ↓ | SSIM ↑ |" in markdown
    actin = next(line for line in markdown.splitlines() if line.startswith("| Actin"))
    nucleus = next(line for line in markdown.splitlines() if line.startswith("| Nucleus"))
    assert actin.count(" *") == 2 and nucleus.count(" *") == 5  # challenge metrics: PCC+SSIM vs all five
    assert markdown.index("Nucleus") < markdown.index("Actin")
    assert (tmp_path / "report" / "metrics_summary.csv").is_file()


def test_summary_is_mean_and_std_of_the_rows(study, tmp_path):
    predictions = tmp_path / "pred"
    _predict_with_targets(study, predictions, noise=50.0)
    pairs = [p for p in find_pairs(predictions, study) if p.organelle == "Nucleus"]
    rows = evaluate(pairs)
    expected = [compute_metrics(read_image(p.prediction).data, read_image(p.target).data) for p in pairs]
    (summary,) = summarize(rows)
    assert summary["organelle"] == "Nucleus" and summary["n"] == len(pairs)
    for name in ("MAE", "SSIM", "PCC", "C_dist"):
        values = [e[name] for e in expected]
        assert summary[f"{name}_mean"] == pytest.approx(np.mean(values))
        assert summary[f"{name}_std"] == pytest.approx(np.std(values))


def test_tuple_pairs_and_shape_mismatch(tmp_path):
    write_ome_tiff(tmp_path / "p.tif", np.random.default_rng(1).random((20, 20)).astype(np.float32))
    write_ome_tiff(tmp_path / "t.tif", np.random.default_rng(2).random((20, 21)).astype(np.float32))
    (row,) = evaluate([(tmp_path / "p.tif", tmp_path / "t.tif", "mito")])
    assert row["organelle"] == "Mitochondria" and "shape" in row["status"]
