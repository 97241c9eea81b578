"""What the CLI prints: no library warnings, progress lines with an ETA when stderr is not a terminal."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_lightmycells.cli.progress import ProgressBar, format_seconds, set_log_level
from napari_lightmycells.events import Reporter

SRC = Path(__file__).parent.parent / "src"


@pytest.fixture(autouse=True)
def default_level():
    set_log_level(logging.INFO)  # as `lightmycells` without -q/-v
    yield
    set_log_level(logging.NOTSET)


def test_no_library_warning_reaches_the_user():
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-m", "napari_lightmycells.cli", "models"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "unetr_paper" in result.stdout
    assert "Warning" not in result.stderr


def test_without_a_terminal_progress_is_periodic_lines_with_eta(capsys):
    reporter = Reporter("train", [ProgressBar("fine-tune", interval_s=0)], total=4)
    reporter.emit("start", 0, message="train: 2 epochs of 2 steps")
    for step in range(1, 5):
        reporter.emit("step", step, epoch=(step + 1) // 2, metrics={"loss": 1.0 / step})
        if step % 2 == 0:
            reporter.emit("epoch", step, epoch=step // 2, metrics={"train_loss": 0.5, "epoch_time_s": 1.0})
            reporter.emit("checkpoint", step, epoch=step // 2, path="last.pt", metrics={"train_loss": 0.5})
    reporter.emit("done", 4, message="train completed", path="best.pt")
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == ""
    assert lines[0] == "train: 2 epochs of 2 steps" and lines[-1] == "train completed (best.pt)"
    assert [line.split(":")[0] for line in lines if line.startswith("epoch")] == ["epoch 1", "epoch 2"]
    assert "epoch_time_s" not in captured.err and "last.pt" not in captured.err
    assert "fine-tune [step 1/4 (25%)]" in lines  # no ETA before a rate is known
    assert any(line.startswith("fine-tune [step 3/4 (75%), ETA ") for line in lines)


def test_results_of_inputs_go_to_stdout_and_quiet_shows_nothing(capsys):
    bar = ProgressBar("predict")
    reporter = Reporter("predict", [bar], total=1)
    reporter.emit("log", 1, message="ok       a.tif  wrote 1 file(s)", path="a.tif")
    reporter.emit("log", 1, message="a note")
    assert capsys.readouterr() == ("ok       a.tif  wrote 1 file(s)\n", "a note\n")
    set_log_level(logging.WARNING)  # -q
    reporter.emit("start", 0, message="Predicting Nucleus for 1 input(s)")
    reporter.emit("log", 1, message="ok       a.tif  wrote 1 file(s)", path="a.tif")
    assert capsys.readouterr() == ("", "")


def test_format_seconds():
    assert [format_seconds(s) for s in (4.2, 89, 210, 7200)] == ["4 s", "89 s", "3.5 min", "2.0 h"]
