import pytest
import tifffile

from napari_lightmycells.checkpoint import save_checkpoint
from napari_lightmycells.cli import main
from napari_lightmycells.data.io import read_image
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.models import create_model


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_synthetic_study(tmp_path_factory.mktemp("study"), n_cases=2, size=96, n_planes=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "nucleus.pt"
    return save_checkpoint(path, create_model("unetr_tiny"), organelle="Nucleus", modality=["BF"])


def test_predict_then_evaluate_writes_images_and_tables(study, checkpoint, tmp_path, capsys):
    inputs = sorted(study.glob("image_*_BF_z*.ome.tiff"))
    out = tmp_path / "pred"
    assert main(["predict", *map(str, inputs), "-o", str(out), "-m", str(checkpoint), "--tile-size", "64"]) == 0
    written = sorted(out.glob("*_Nucleus.ome.tiff"))
    assert len(written) == len(inputs) == 4
    prediction, source = read_image(written[0]), read_image(inputs[0])
    assert prediction.data.shape == source.data.shape and prediction.data.dtype.name == "float32"
    assert prediction.pixel_size == pytest.approx(source.pixel_size)
    assert "4 of 4 inputs done" in capsys.readouterr().out

    assert main(["evaluate", "--predictions", str(out), "--study", str(study), "-o", str(tmp_path / "eval")]) == 0
    table = (tmp_path / "eval" / "metrics_summary.md").read_text()
    assert "| Nucleus | 4 |" in table
    assert (tmp_path / "eval" / "metrics_per_image.csv").read_text().count("\n") == 5


def test_predict_reports_bad_files_and_fails(study, checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    good = next(study.glob("image_1_BF_z0.ome.tiff"))
    code = main(["predict", str(bad), str(good), "-o", str(tmp_path / "out"), "-m", f"Nucleus={checkpoint}",
                 "--tile-size", "64"])
    out = capsys.readouterr().out
    assert code == 1
    assert "error" in out and "broken.tif" in out and "1 of 2 inputs done" in out


def test_predict_without_model_is_a_clear_error(study, tmp_path, capsys):
    assert main(["predict", str(study), "-o", str(tmp_path)]) == 2
    assert "No model given" in capsys.readouterr().err


def test_predict_with_unknown_model_name_is_a_clear_error(study, tmp_path, capsys):
    assert main(["predict", str(study), "-o", str(tmp_path), "-m", "Nucleus=no-such-model"]) == 2
    assert "No registered model named 'no-such-model'" in capsys.readouterr().err


def test_checkpoint_without_organelle_needs_one(study, tmp_path, capsys):
    anonymous = save_checkpoint(tmp_path / "anon.pt", create_model("unetr_tiny"))
    assert main(["predict", str(study), "-o", str(tmp_path), "-m", str(anonymous)]) == 2
    assert "does not say which organelle" in capsys.readouterr().err


def test_study_command_summarises_and_checks(tmp_path, capsys):
    folder = tmp_path / "s"
    assert main(["study", str(folder), "--synthetic", "--check"]) == 0
    out = capsys.readouterr().out
    assert "cases:        6" in out and "Mitochondria 6" in out and "check:        ok" in out
    tifffile.imwrite(folder / "image_1_BF_z0.ome.tiff", tifffile.imread(folder / "image_1_BF_z0.ome.tiff")[:50])
    assert main(["study", str(folder)]) == 2
    assert "shapes disagree" in capsys.readouterr().err


def test_predicting_a_study_folder_skips_targets_and_earlier_predictions(study, checkpoint, capsys):
    args = ["predict", str(study), "-o", str(study), "-m", str(checkpoint), "--tile-size", "64"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "skipped  " in first and "image_1_Nucleus.ome.tiff" in first and "organelle image" in first
    assert not (study / "image_1_Nucleus_Nucleus.ome.tiff").exists()
    assert main(args) == 0  # outputs written next to the inputs are not taken as new inputs
    assert not any(study.glob("*_Nucleus_Nucleus.ome.tiff"))
    for path in study.glob("image_*_BF_z*_Nucleus.ome.tiff"):  # leave the shared study as it was
        path.unlink()
