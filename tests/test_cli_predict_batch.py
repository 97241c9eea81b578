"""`lightmycells predict` on many or big files: each model loaded once, resume, summary CSV, torchrun
shards, lazy reading of big TIFFs and OME-Zarr outputs."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

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


def summary_rows(folder):
    [summary] = folder.glob("predict_summary_*.csv")
    with open(summary, newline="") as handle:
        return {os.path.basename(row["input"]): row for row in csv.DictReader(handle)}


def test_each_model_is_loaded_once_and_reruns_resume(study, checkpoint, tmp_path, monkeypatch, capsys):
    loads = []
    real_load = cache.load_model
    monkeypatch.setattr(cache, "load_model", lambda *args: loads.append(args) or real_load(*args))
    out = tmp_path / "pred"
    args = [
        "predict",
        str(study),
        "-o",
        str(out),
        "-m",
        str(checkpoint),
        "--tile-size",
        "64",
        "--device",
        "cpu",
    ]
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
def test_torchrun_two_processes_share_the_inputs_and_write_one_summary(study, checkpoint, tmp_path):
    out = tmp_path / "pred"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "napari_lightmycells.cli",
        "predict",
        str(study),
        "-o",
        str(out),
        "-m",
        str(checkpoint),
        "--tile-size",
        "64",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(out.glob("*_BF_z*_Nucleus.ome.tiff"))) == 4
    rows = summary_rows(out)
    assert sorted(row["status"] for row in rows.values()).count("ok") == 4
    assert len(rows) == len(list(study.iterdir()))  # every file of the folder, once
    assert done.stdout.count("4 of 4 inputs done") == 1  # only rank 0 reports

    again = subprocess.run(
        [*command, "--skip-existing"], capture_output=True, text=True, timeout=240, env=env
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 of 0 inputs done (" in again.stdout
