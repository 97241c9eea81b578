"""`lightmycells train` / `pretrain` command lines: presets, overrides, resume, errors, torchrun."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import yaml

from napari_lightmycells.checkpoint import read_checkpoint
from napari_lightmycells.cli import main
from napari_lightmycells.data.synthetic import make_synthetic_study

FAST = ["--device", "cpu", "--no-progress", "--preview-every", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_synthetic_study(tmp_path_factory.mktemp("study"), n_cases=6, size=96, n_planes=2, seed=2)


TINY_RUN = ["train", "--preset", "tiny_cpu", "--epochs", "1", "--samples-per-case", "2", "--batch-size", "4"]


def _train(study, out, *extra):
    """A one-epoch tiny_cpu run of ``study`` into ``out``."""
    return main([*TINY_RUN, "--data", str(study), "--output", str(out), *FAST, *extra])


def test_train_preset_with_overrides_then_resume(study, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(study, out, "--lr", "1e-3") == 0
    assert {p.name for p in out.iterdir()} == {"config.yaml", "best.pt", "last.pt", "metrics.csv"}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["model"], saved["epochs"], saved["batch_size"], saved["lr"]) == ("unetr_tiny", 1, 4, 1e-3)
    assert "epoch 1: train_loss" in capsys.readouterr().err

    # --resume alone takes the stored config; --epochs extends the run.
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "2", *FAST]) == 0
    state = read_checkpoint(out / "last.pt")["training_state"]
    assert state["loop"]["epoch"] == 2 and state["config"]["batch_size"] == 4
    rows = list(csv.DictReader((out / "metrics.csv").open()))  # one row per epoch, across the resume
    assert [int(row["epoch"]) for row in rows] == [1, 2] and {"step", "train_loss", "val_loss", "lr"} <= set(
        rows[0]
    )
    assert [float(row["train_loss"]) for row in rows] == [
        entry["train_loss"] for entry in state["loop"]["history"]
    ]

    # Resuming with a setting that shapes the optimisation is refused; exit 2 before anything runs.
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "3", "--lr", "5e-3", *FAST]) == 2
    assert "cannot be resumed with other settings (lr 0.001 -> 0.005)" in capsys.readouterr().err


def test_train_errors_exit_with_status_2(study, tmp_path, capsys):
    fast = [*FAST, "--output", str(tmp_path / "run")]  # never the presets' runs/ in the working folder
    assert main(["train", "--preset", "nucleus", "--patch-size", "100", *fast]) == 2  # was a raw ValueError
    err = capsys.readouterr().err
    assert "crop_size 100 is not a multiple of the 32-pixel token size of unetr_paper: use 96 or 128." in err
    assert err.count("\n") == 2  # the deprecation warning and one line of error
    for flags, message in [
        (["--batch-size", "0"], "batch_size: Input should be greater than or equal to 1, got 0."),
        (["--precision", "fp16", "--device", "cpu"], "precision fp16 needs a CUDA GPU, not device cpu"),
        (["--lr", "1e-7"], "min_lr 1e-05 is above lr 1e-07."),
        (["--organelle", "nucleolus"], "organelle: Unknown organelle 'nucleolus'"),
    ]:
        assert main(["train", "--preset", "tiny_cpu", *flags, *fast]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "--preset", "no_such_preset", *fast]) == 2
    assert "Unknown preset 'no_such_preset'" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "missing.pt"), *fast]) == 2
    assert "Checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny_cpu", "--data", str(tmp_path / "nothing"), *fast]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny_cpu", "--model", "unetr_nope", "--data", str(study), *fast]) == 2
    assert "Unknown UNETR preset" in capsys.readouterr().err


def test_pretrain_command(study, tmp_path):
    out = tmp_path / "mae"
    assert (
        main(
            [
                "pretrain",
                "--preset",
                "pretrain_tiny",
                "--data",
                str(study),
                "--output",
                str(out),
                "--epochs",
                "1",
                *FAST,
            ]
        )
        == 0
    )
    assert read_checkpoint(out / "last.pt")["kind"] == "mae"


@pytest.mark.slow
def test_torchrun_two_processes_write_one_checkpoint_set(study, tmp_path, torchrun):
    out = tmp_path / "ddp"
    done = torchrun(
        "train",
        "--preset",
        "tiny_cpu",
        "--data",
        str(study),
        "--output",
        str(out),
        "--epochs",
        "2",
        "--samples-per-case",
        "4",
        "--batch-size",
        "2",
        *FAST,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.csv"]
    assert done.stderr.count("epoch 2: train_loss") == 1  # only rank 0 reports
    state = read_checkpoint(out / "last.pt")["training_state"]
    # 5 training cases x 4 samples, shared by 2 processes (padded to 10 each), batches of 2: 5 steps/epoch.
    assert state["loop"]["step"] == 2 * 5
    assert len(state["rng"]) == 2  # one RNG snapshot per rank


# -- a run folder is never replaced by accident (issue 13) -------------------------------------------------
def test_training_into_an_earlier_run_is_refused_unless_overwrite(study, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(study, out) == 0
    before = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt")}
    capsys.readouterr()
    assert _train(study, out, "--lr", "0.5") == 2
    err = capsys.readouterr().err
    assert f"--resume {out / 'last.pt'}" in err and "--overwrite" in err and err.count("\n") == 1
    assert all((out / name).read_bytes() == data for name, data in before.items())
    assert _train(study, out, "--overwrite", "--seed", "1") == 0
    assert (out / "last.pt").read_bytes() != before["last.pt"]
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 1


def test_run_folder_that_is_a_file_or_read_only_fails_before_reading_data(tmp_path, read_only_folder, capsys):
    (tmp_path / "taken").write_text("x")
    missing_data = tmp_path / "no-such-study"  # read after the folder checks: never reached
    assert _train(missing_data, tmp_path / "taken") == 2
    assert "is an existing file" in capsys.readouterr().err
    assert _train(missing_data, read_only_folder) == 2
    err = capsys.readouterr().err
    assert "Run folder" in err and "is not writable" in err


def test_max_steps_then_resume_continues_and_stale_temporaries_are_cleaned(study, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(study, out, "--epochs", "3", "--max-steps", "1") == 0
    assert "max_steps=1 reached" in capsys.readouterr().err
    assert read_checkpoint(out / "last.pt")["training_state"]["loop"]["step"] == 1
    stale = out / ".last.pt.x81kq2.tmp"  # what a SIGKILL during a checkpoint write leaves
    stale.write_bytes(b"\0" * 1000)
    assert main(["train", "--resume", str(out / "last.pt"), "--max-steps", "1", *FAST]) == 2
    assert "already at step 1 and max_steps is 1" in capsys.readouterr().err
    assert main(["train", "--resume", str(out / "last.pt"), *FAST]) == 0
    state = read_checkpoint(out / "last.pt")["training_state"]
    assert state["loop"]["epoch"] == 3 and state["loop"]["step"] > 1
    assert not stale.exists()


def test_sigterm_requests_a_resumable_stop_like_ctrl_c():
    import signal

    from napari_lightmycells.cli.train import stop_on_interrupt

    previous = signal.getsignal(signal.SIGTERM)
    with stop_on_interrupt() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):  # a second one aborts
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.slow
def test_sigterm_saves_last_pt_and_the_run_resumes(study, tmp_path):
    import signal

    out = tmp_path / "run"
    cli = [sys.executable, "-m", "napari_lightmycells.cli"]
    command = [*cli, *TINY_RUN, "--data", str(study), "--output", str(out), *FAST, "--epochs", "1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    for line in process.stderr:
        if line.startswith("epoch 1:"):
            process.send_signal(signal.SIGTERM)
            break
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, rest[-2000:]
    assert "SIGTERM: stopping after this step" in rest and "resume with --resume" in rest
    state = read_checkpoint(out / "last.pt")["training_state"]
    assert state["loop"]["epoch"] >= 1 and state["loop"]["step"] >= 2
    assert (
        main(["train", "--resume", str(out / "last.pt"), "--epochs", str(state["loop"]["epoch"] + 1), *FAST])
        == 0
    )
