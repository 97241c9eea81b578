import csv
import os

import numpy as np
import pytest
import tifffile
import torch

from napari_lightmycells.checkpoint import save_checkpoint
from napari_lightmycells.cli import main
from napari_lightmycells.data import lazy
from napari_lightmycells.data.io import read_image
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.inference import cache
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
    assert (
        main(["predict", *map(str, inputs), "-o", str(out), "-m", str(checkpoint), "--tile-size", "64"]) == 0
    )
    written = sorted(out.glob("*_Nucleus.ome.tiff"))
    assert len(written) == len(inputs) == 4
    prediction, source = read_image(written[0]), read_image(inputs[0])
    assert prediction.data.shape == source.data.shape and prediction.data.dtype.name == "float32"
    assert prediction.pixel_size == pytest.approx(source.pixel_size)
    printed = capsys.readouterr()
    assert "4 of 4 inputs done" in printed.out
    for path in inputs:  # one line per input, nothing else names it
        assert printed.out.count(str(path)) == 1 and str(path) not in printed.err

    assert (
        main(["evaluate", "--predictions", str(out), "--study", str(study), "-o", str(tmp_path / "eval")])
        == 0
    )
    table = (tmp_path / "eval" / "metrics_summary.md").read_text()
    assert "| Nucleus | 4 |" in table
    assert (tmp_path / "eval" / "metrics_per_image.csv").read_text().count("\n") == 5


def test_predict_reports_bad_files_and_fails(study, checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    good = next(study.glob("image_1_BF_z0.ome.tiff"))
    code = main(
        [
            "predict",
            str(bad),
            str(good),
            "-o",
            str(tmp_path / "out"),
            "-m",
            f"Nucleus={checkpoint}",
            "--tile-size",
            "64",
        ]
    )
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
    tifffile.imwrite(
        folder / "image_1_BF_z0.ome.tiff", tifffile.imread(folder / "image_1_BF_z0.ome.tiff")[:50]
    )
    assert main(["study", str(folder)]) == 2
    assert "shapes disagree" in capsys.readouterr().err
    before = (folder / "image_1_BF_z0.ome.tiff").read_bytes()
    assert main(["study", str(folder), "--synthetic"]) == 2  # never written over an existing study
    assert "is not empty" in capsys.readouterr().err
    assert (folder / "image_1_BF_z0.ome.tiff").read_bytes() == before


def test_predicting_a_study_folder_skips_targets_and_earlier_predictions(study, checkpoint, capsys):
    args = ["predict", str(study), "-o", str(study), "-m", str(checkpoint), "--tile-size", "64"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "skipped  " in first and "image_1_Nucleus.ome.tiff" in first and "organelle image" in first
    assert not (study / "image_1_Nucleus_Nucleus.ome.tiff").exists()
    before = {p: p.read_bytes() for p in study.glob("image_*_BF_z*_Nucleus.ome.tiff")}
    assert (
        main([*args, "--overwrite"]) == 2
    )  # earlier predictions next to the inputs are inputs' organelle images
    assert "never overwritten" in capsys.readouterr().err
    assert not any(study.glob("*_Nucleus_Nucleus.ome.tiff"))
    assert before and all(p.read_bytes() == data for p, data in before.items())
    for path in study.glob("image_*_BF_z*_Nucleus.ome.tiff"):  # leave the shared study as it was
        path.unlink()


# -- outputs never overwrite a user's files (issue 13) ------------------------------------------------------
@pytest.fixture
def cell_folder(tmp_path, study):
    """``cell1.ome.tiff`` (bright field) next to ``cell1_Nucleus.ome.tiff`` (real fluorescence)."""
    folder = tmp_path / "cells"
    folder.mkdir()
    (folder / "cell1.ome.tiff").write_bytes((study / "image_1_BF_z0.ome.tiff").read_bytes())
    (folder / "cell1_Nucleus.ome.tiff").write_bytes((study / "image_1_Nucleus.ome.tiff").read_bytes())
    return folder


def _predict(inputs, out, checkpoint, *extra):
    return main(
        ["predict", *map(str, inputs), "-o", str(out), "-m", str(checkpoint), "--tile-size", "64", *extra]
    )


def test_predict_never_overwrites_ground_truth_next_to_the_input(cell_folder, checkpoint, capsys):
    truth = (cell_folder / "cell1_Nucleus.ome.tiff").read_bytes()
    for extra in ((), ("--overwrite",)):
        assert _predict([cell_folder], cell_folder, checkpoint, *extra) == 2
        err = capsys.readouterr().err
        assert "cell1_Nucleus.ome.tiff is an organelle image among the inputs" in err and "-o" in err
        assert err.count("\n") == 1
    assert (cell_folder / "cell1_Nucleus.ome.tiff").read_bytes() == truth


def test_inputs_with_the_same_stem_are_refused_before_writing(study, checkpoint, tmp_path, capsys):
    source = (study / "image_1_BF_z0.ome.tiff").read_bytes()
    for path in ("d1/x.tif", "d1/x.ome.tiff", "d2/x.tif"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_bytes(source)
    out = tmp_path / "out"
    assert _predict([tmp_path / "d1", tmp_path / "d2"], out, checkpoint) == 2
    err = capsys.readouterr().err
    assert "would both be predicted into x_Nucleus.ome.tiff" in err
    assert not any(out.glob("*.tiff"))


def test_existing_outputs_are_replaced_only_with_overwrite(study, checkpoint, tmp_path, capsys, caplog):
    image = study / "image_1_BF_z0.ome.tiff"
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "image_1_BF_z0_Nucleus.ome.tiff"
    existing.write_bytes(b"an earlier result")
    (out / ".image_1_BF_z0_Nucleus.ome.tiff.k2j4.tmp").write_bytes(b"left by a killed run")
    assert _predict([image], out, checkpoint) == 2
    assert (
        "1 output(s) already exist" in capsys.readouterr().err
        and existing.read_bytes() == b"an earlier result"
    )
    assert _predict([image], out, checkpoint, "--overwrite") == 0
    assert read_image(existing).data.shape == read_image(image).data.shape
    assert "Replacing 1 existing output(s)" in caplog.text
    assert not list(out.glob(".*.tmp"))  # the stale temporary was cleaned


def test_output_naming_a_file_or_a_read_only_folder_fails_before_predicting(
    study, checkpoint, tmp_path, read_only_folder, capsys
):
    image = study / "image_1_BF_z0.ome.tiff"
    (tmp_path / "taken.tif").write_bytes(b"x")
    assert _predict([image], tmp_path / "taken.tif", checkpoint) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert _predict([image], read_only_folder, checkpoint) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("content", ["empty", "png"])
def test_folder_without_tiff_inputs_is_an_error(checkpoint, tmp_path, capsys, content):
    folder = tmp_path / "in"
    folder.mkdir()
    if content == "png":
        (folder / "a.png").write_bytes(b"\x89PNG")
    assert _predict([folder], tmp_path / "out", checkpoint) == 2
    err = capsys.readouterr().err
    assert "Nothing to predict" in err and (
        "not a TIFF" in err if content == "png" else "empty folder" in err
    )


def test_bad_overlap_is_refused_before_any_model_or_image_is_read(checkpoint, tmp_path, capsys, monkeypatch):
    from napari_lightmycells.cli import predict

    monkeypatch.setattr(predict, "resolve_model", lambda spec: pytest.fail("model loaded"))
    assert _predict([tmp_path], tmp_path / "out", checkpoint, "--overlap", "0.9") == 2
    assert "overlap must be" in capsys.readouterr().err


def test_wrong_organelle_model_is_a_one_line_warning(study, checkpoint, tmp_path, capsys, caplog):
    image = study / "image_1_BF_z0.ome.tiff"
    code = main(
        ["predict", str(image), "-o", str(tmp_path), "-m", f"Actin={checkpoint}", "--tile-size", "64"]
    )
    assert code == 0
    assert "warning: nucleus.pt was trained for Nucleus but is used for Actin." in caplog.text
    assert "UserWarning" not in capsys.readouterr().err


def test_evaluate_checks_normalization_and_its_report_folder_first(study, tmp_path, read_only_folder, capsys):
    common = ["evaluate", "--predictions", str(tmp_path), "--study", str(study)]
    assert main([*common, "-o", str(tmp_path / "r"), "--normalization", "zscor"]) == 2
    assert "Unknown metric normalisation 'zscor'" in capsys.readouterr().err
    assert main([*common, "-o", str(read_only_folder)]) == 2
    assert "is not writable" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([*common, "-o", str(tmp_path / "file")]) == 2
    assert "is an existing file" in capsys.readouterr().err
    report = tmp_path / "report"
    assert main([*common, "-o", str(report)]) == 1  # nothing scored: no predictions in tmp_path
    capsys.readouterr()
    (report / "metrics_summary.md").write_text("my notes")
    assert main([*common, "-o", str(report)]) == 2
    assert (
        "pass --overwrite" in capsys.readouterr().err
        and (report / "metrics_summary.md").read_text() == "my notes"
    )
    assert main([*common, "-o", str(report), "--overwrite"]) == 1
    assert (report / "metrics_summary.md").read_text() != "my notes"


def test_unforeseen_file_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import errno
    import os

    from napari_lightmycells.cli import models

    def full_disk(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))

    monkeypatch.setattr(models, "run", full_disk)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: [Errno 28] No space left on device") and err.count("\n") == 1
    with pytest.raises(OSError):
        main(["-v", "models"])


class RunsCode:
    def __reduce__(self):
        return (print, ("this ran",))


def unsafe_checkpoint(path):
    torch.save({"model": {}, "cfg": RunsCode()}, path)


def list_checkpoint(path):
    torch.save([torch.zeros(1)], path)


def checkpoint_with_unknown_config_key(path):
    save_checkpoint(path, create_model("unetr_tiny"), organelle="Nucleus")
    payload = torch.load(path, weights_only=True)
    payload["config"]["colour"] = "blue"
    torch.save(payload, path)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (unsafe_checkpoint, "bad.pt was refused: it stores Python objects (builtins.print)"),
        (list_checkpoint, "bad.pt holds a list, not a model checkpoint"),
        (checkpoint_with_unknown_config_key, "bad.pt: the stored model config is not understood"),
    ],
    ids=["unsafe", "list", "unknown-config-key"],
)
@pytest.mark.parametrize("spec", ["{}", "Nucleus={}"], ids=["bare", "with-organelle"])
def test_bad_checkpoints_are_one_line_errors(study, tmp_path, capsys, make, expected, spec):
    make(tmp_path / "bad.pt")
    code = main(["predict", str(study), "-o", str(tmp_path / "out"), "-m", spec.format(tmp_path / "bad.pt")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(f"error: {expected}") and captured.err.count("\n") == 1
    assert "weights_only" not in captured.err and "this ran" not in captured.out
    assert not (tmp_path / "out").exists()


def predict_options(inputs, out, checkpoint) -> list[str]:
    return [str(inputs), "-o", str(out), "-m", str(checkpoint), "--tile-size", "64", "--device", "cpu"]


def summary_rows(folder):
    [summary] = folder.glob("predict_summary_*.csv")
    with open(summary, newline="") as handle:
        return {os.path.basename(row["input"]): row for row in csv.DictReader(handle)}


def test_each_model_is_loaded_once_and_reruns_resume(study, checkpoint, tmp_path, monkeypatch, capsys):
    loads = []
    real_load = cache.load_model
    monkeypatch.setattr(cache, "load_model", lambda *args: loads.append(args) or real_load(*args))
    out = tmp_path / "pred"
    args = ["predict", *predict_options(study, out, checkpoint)]
    assert main(args) == 0
    assert len(loads) == 1  # the organelle is read from the checkpoint loaded for prediction
    rows = summary_rows(out)
    predicted = sorted(name for name, row in rows.items() if row["status"] == "ok")
    assert predicted == [f"image_{c}_BF_z{z}.ome.tiff" for c in (1, 2) for z in (0, 1)]
    assert rows["image_1_Nucleus.ome.tiff"]["status"] == "skipped"  # every input is listed
    assert rows["image_1_BF_z0.ome.tiff"]["outputs"].endswith("image_1_BF_z0_Nucleus.ome.tiff")

    first = out / "image_1_BF_z0_Nucleus.ome.tiff"
    kept = first.stat().st_mtime_ns
    (out / "image_2_BF_z1_Nucleus.ome.tiff").unlink()  # as if the earlier run was interrupted
    for summary in out.glob("predict_summary_*.csv"):
        summary.unlink()
    capsys.readouterr()
    assert main([*args, "--skip-existing"]) == 0
    rows = summary_rows(out)
    assert [name for name, row in rows.items() if row["status"] == "ok"] == ["image_2_BF_z1.ome.tiff"]
    assert rows["image_1_BF_z0.ome.tiff"]["message"] == "outputs exist (--skip-existing)"
    assert first.stat().st_mtime_ns == kept and (out / "image_2_BF_z1_Nucleus.ome.tiff").is_file()
    assert main(args) == 2  # without --skip-existing (or --overwrite) existing outputs stay an error


@pytest.mark.parametrize(
    "compression", [None, "zlib"]
)  # memory-mapped, or read through tifffile's zarr store
def test_big_tiff_is_read_lazily_and_predicted_into_ome_zarr(checkpoint, tmp_path, monkeypatch, compression):
    ome_zarr_reader = pytest.importorskip("ome_zarr.reader")
    from ome_zarr.io import parse_url

    rng = np.random.default_rng(0)
    image = (rng.random((1, 200, 150)) * 1000).astype(np.uint16)
    source = tmp_path / "in" / "big_BF.ome.tiff"
    source.parent.mkdir()
    tifffile.imwrite(
        source,
        image,
        compression=compression,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5},
    )
    args = ["predict", str(source), "--tile-size", "64", "--device", "cpu", "-m", str(checkpoint)]
    assert main([*args, "-o", str(tmp_path / "small")]) == 0
    expected = read_image(tmp_path / "small" / "big_BF_Nucleus.ome.tiff").data

    opened = []
    monkeypatch.setattr(lazy, "LAZY_READ_ABOVE", 1000)
    monkeypatch.setattr(lazy, "ZARR_OUTPUT_ABOVE", 1000)
    monkeypatch.setattr(lazy, "read_image", lambda path: pytest.fail("read in one piece"))
    original = lazy.open_image
    monkeypatch.setattr(lazy, "open_image", lambda path: opened.append(original(path)) or opened[-1])
    assert main([*args, "-o", str(tmp_path / "big")]) == 0
    assert not isinstance(opened[0].data, np.ndarray) or isinstance(opened[0].data, np.memmap)
    written = tmp_path / "big" / "big_BF_Nucleus.ome.zarr"
    [node] = list(ome_zarr_reader.Reader(parse_url(str(written)))())
    np.testing.assert_allclose(np.asarray(node.data[0]), expected, rtol=1e-5, atol=1e-3)
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == [0.5, 0.5]
    assert not [p for p in written.parent.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.slow
def test_torchrun_two_processes_share_the_inputs_and_write_one_summary(study, checkpoint, tmp_path, torchrun):
    out = tmp_path / "pred"
    options = predict_options(study, out, checkpoint)
    done = torchrun("predict", *options)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(out.glob("*_BF_z*_Nucleus.ome.tiff"))) == 4
    rows = summary_rows(out)
    assert sorted(row["status"] for row in rows.values()).count("ok") == 4
    assert len(rows) == len(list(study.iterdir()))  # every file of the folder, once
    assert done.stdout.count("4 of 4 inputs done") == 1  # only rank 0 reports

    again = torchrun("predict", *options, "--skip-existing")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 of 0 inputs done (" in again.stdout


def test_an_image_over_the_memory_budget_is_predicted_lazily_not_refused(checkpoint, tmp_path, monkeypatch):
    image = (np.random.default_rng(1).random((120, 100)) * 1000).astype(np.uint16)
    source = tmp_path / "cells_BF.tif"
    tifffile.imwrite(source, image)
    args = ["predict", *predict_options(source, tmp_path / "out", checkpoint)]
    assert main([*args[:3], str(tmp_path / "eager"), *args[4:]]) == 0
    monkeypatch.setenv("LIGHTMYCELLS_MAX_IMAGE_GIB", "0.00001")  # ~10 kB: read_image would refuse it
    monkeypatch.setattr(lazy, "read_image", lambda path: pytest.fail("read in one piece"))
    assert main(args) == 0
    np.testing.assert_allclose(
        tifffile.imread(tmp_path / "out" / "cells_BF_Nucleus.ome.tiff"),
        tifffile.imread(tmp_path / "eager" / "cells_BF_Nucleus.ome.tiff"),
        rtol=1e-5,
        atol=1e-3,
    )


def test_quiet_predict_prints_only_the_summary(study, checkpoint, tmp_path, capsys):
    inputs = sorted(study.glob("image_*_BF_z*.ome.tiff"))
    args = ["predict", *map(str, inputs), "-o", str(tmp_path), "-m", str(checkpoint), "--tile-size", "64"]
    assert main(["-q", *args]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    assert printed.out.splitlines()[0] == f"4 of 4 inputs done (0 skipped), outputs in {tmp_path}"
    assert len(printed.out.splitlines()) == 2  # and the summary table's path
