import csv

from napari_lightmycells.cli import main


def test_demo_runs_the_whole_pipeline(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--epochs", "1", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "UNETR predictions (held-out cases)" in printed and "Baseline" in printed
    assert captured.err.count("epoch 1:") == 1 and "Warning" not in captured.err
    assert printed.count("ok       ") == 9  # one line per predicted input
    assert (out / "run" / "best.pt").is_file() and (out / "run" / "last.pt").is_file()
    predictions = sorted((out / "predictions").glob("*_Nucleus.ome.tiff"))
    assert len(predictions) == 9  # 3 held-out cases x 3 focus planes
    with open(out / "evaluation" / "metrics_per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and all(row["status"] == "ok" for row in rows)


def test_demo_refuses_a_folder_holding_an_earlier_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "run").mkdir(parents=True)
    (out / "run" / "best.pt").write_bytes(b"an earlier model")
    assert main(["demo", "-o", str(out), "--epochs", "1", "--device", "cpu"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "run" / "best.pt").read_bytes() == b"an earlier model"
