"""Fine-tune widget: a tiny run from layers with live progress, stop, hand-off to Predict, resume, errors."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from napari_lightmycells.data.io import read_image
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.widgets._latency import LatencyProbe
from napari_lightmycells.widgets._training import FOLDER, format_eta
from napari_lightmycells.widgets.finetune import FinetuneWidget, PairRow

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    folder = make_synthetic_study(tmp_path_factory.mktemp("ft_study"), n_cases=2, size=72, n_planes=2)
    return [
        (
            np.stack([read_image(folder / f"image_{i}_BF_z{z}.ome.tiff").data for z in range(2)]),
            read_image(folder / f"image_{i}_Nucleus.ome.tiff").data,
        )
        for i in (1, 2)
    ]


@pytest.fixture
def viewer_and_widget(make_napari_viewer, pair_files, tmp_path):
    viewer = make_napari_viewer()
    for index, (stack, target) in enumerate(pair_files, 1):
        viewer.add_image(stack, name=f"BF {index}")
        viewer.add_image(target, name=f"Nucleus {index}")
    widget = FinetuneWidget(viewer, mode="thread")
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.pairs.append(PairRow(viewer))
    for index, row in enumerate(widget.pairs, 1):
        row.input.value, row.target.value = viewer.layers[f"BF {index}"], viewer.layers[f"Nucleus {index}"]
    widget.model.value, widget.crop_size.value, widget.batch_size.value = "unetr_tiny", 64, 1
    widget.epochs.value, widget.val_fraction.value, widget.workers.value = 1000, 0.5, 0
    widget.samples.value = 1
    widget.device.value, widget.output.value = "cpu", tmp_path / "run"
    return viewer, widget


def test_run_from_layers_shows_progress_stops_and_feeds_predict_then_resumes(
    viewer_and_widget, qtbot, record_property, capsys
):
    viewer, widget = viewer_and_widget
    _, predict = viewer.window.add_plugin_dock_widget("napari-lightmycells", "Predict organelles")
    probe = LatencyProbe()  # event-loop latency during training: reported, not asserted on
    probe.start()

    widget.start_button.clicked()
    assert widget.job is not None and not widget.start_button.enabled and not widget.settings.enabled
    qtbot.waitUntil(lambda: "Fine-tuning preview: prediction" in viewer.layers, timeout=TIMEOUT_MS)
    assert widget.progress.value >= 1 and widget.progress.max == 1000
    assert "epoch" in widget.status.value and "loss" in widget.status.value
    assert {"train_loss", "val_loss", "val_psnr"} <= set(widget.plot.curves)
    assert viewer.layers["Fine-tuning preview: prediction"].data.shape == (64, 64)
    data_right = max(viewer.layers[name].extent.world[1][-1] for name in ("BF 1", "Nucleus 2"))
    previews = [viewer.layers[f"Fine-tuning preview: {name}"] for name in ("input", "target", "prediction")]
    preview_left = min(layer.translate[-1] for layer in previews)
    assert preview_left > data_right  # previews sit beside the data, not over it
    assert viewer.layers["Fine-tuning preview: target"].translate[-1] > preview_left + 64

    widget.stop_button.clicked()
    qtbot.waitUntil(lambda: widget.job is None, timeout=TIMEOUT_MS)
    latency = probe.stop()
    record_property("gui_latency_ms", latency)
    with capsys.disabled():
        print(f"\nviewer event-loop lateness while training (thread mode): {latency}")
    assert latency["ticks"] > 0
    last = Path(widget.output.value) / "last.pt"
    assert last.is_file() and widget.start_button.enabled and widget.settings.enabled
    assert "stopped" in widget.status.value
    row = predict.rows["Nucleus"]
    assert row.selected.value and Path(row.file.value) in (last, last.with_name("best.pt"))

    predict.image.value, predict.tile_size.value, predict.device.value = viewer.layers["BF 1"], 64, "cpu"
    predict.predict_button.clicked()
    qtbot.waitUntil(lambda: predict.worker is None, timeout=TIMEOUT_MS)
    assert viewer.layers["BF 1 Nucleus"].data.shape == (72, 72)

    stopped_at = torch.load(last, weights_only=True)["training_state"]["loop"]["epoch"]
    widget.resume.value, widget.epochs.value = True, stopped_at + 1
    widget.start_button.clicked()
    qtbot.waitUntil(lambda: widget.job is None, timeout=TIMEOUT_MS)
    assert f"completed at epoch {stopped_at + 1}" in widget.status.value


def test_mismatched_pair_is_refused_before_starting(viewer_and_widget, notifications):
    viewer, widget = viewer_and_widget
    widget.pairs[0].target.value = viewer.layers["BF 2"]
    widget.start_button.clicked()
    assert widget.job is None and widget.start_button.enabled
    assert "must be a 2D image" in notifications[-1].message


def test_invalid_settings_are_a_notification_before_anything_starts(viewer_and_widget, notifications):
    _, widget = viewer_and_widget
    widget.lr.value = 1e-7  # below the default min_lr: the config's cross-field check, not the model's
    widget.start_button.clicked()
    assert widget.job is None and widget.start_button.enabled
    assert notifications[-1].message == "Fine-tuning failed: min_lr 1e-06 is above lr 1e-07."


def test_error_in_the_run_is_notified_and_the_widget_goes_idle(
    viewer_and_widget, notifications, qtbot, tmp_path
):
    _, widget = viewer_and_widget
    (tmp_path / "empty").mkdir()
    widget.source.value, widget.folder.value = FOLDER, tmp_path / "empty"
    assert widget.pairs.native.isHidden() and not widget.folder.native.isHidden()
    widget.start_button.clicked()
    qtbot.waitUntil(lambda: widget.job is None, timeout=TIMEOUT_MS)
    assert widget.status.value == "Fine-tuning failed" and widget.start_button.enabled
    assert notifications[-1].message.startswith("Fine-tuning failed:")


def test_eta_is_readable():
    assert [format_eta(s) for s in (7.4, 125, 3725)] == ["7 s", "2 min 05 s", "1 h 02 min"]


def test_training_widgets_are_contributed_by_the_plugin(make_napari_viewer):
    from napari_lightmycells.widgets.pretrain import PretrainWidget

    viewer = make_napari_viewer()
    _, finetune = viewer.window.add_plugin_dock_widget("napari-lightmycells", "Fine-tune organelle model")
    _, pretrain = viewer.window.add_plugin_dock_widget("napari-lightmycells", "Pretrain encoder (MAE)")
    assert isinstance(finetune, FinetuneWidget) and finetune.mode == "process"
    assert isinstance(pretrain, PretrainWidget)


def test_closing_the_dock_of_a_process_run_saves_and_ends_the_process(
    make_napari_viewer, pair_files, qtbot, tmp_path
):
    """As users run it: a spawned process and its real queue; the dock is closed mid-run and nobody polls."""
    viewer = make_napari_viewer()
    viewer.add_image(pair_files[0][0], name="BF")
    viewer.add_image(pair_files[0][1], name="Nucleus")
    widget = FinetuneWidget(viewer)  # mode="process", the default
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.pairs[0].input.value, widget.pairs[0].target.value = viewer.layers["BF"], viewer.layers["Nucleus"]
    widget.model.value, widget.crop_size.value, widget.batch_size.value = "unetr_tiny", 64, 1
    widget.epochs.value, widget.val_fraction.value, widget.workers.value = 1000, 0.0, 0
    widget.device.value, widget.output.value = "cpu", tmp_path / "run"
    widget.start_button.clicked()
    job = widget.job
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=TIMEOUT_MS)
    assert job.mode == "process" and job._worker.is_alive()
    viewer.window.remove_dock_widget(widget.native)
    widget.native.deleteLater()
    qtbot.waitUntil(lambda: not job._worker.is_alive(), timeout=TIMEOUT_MS)  # the test never polls the job
    qtbot.waitUntil(lambda: job.finished, timeout=5_000)
    assert job._worker.exitcode == 0 and job.error is None and job.result.status == "stopped"
    last = tmp_path / "run" / "last.pt"
    assert torch.load(last, weights_only=True)["training_state"]["loop"]["step"] >= 1


def test_a_new_run_goes_to_a_numbered_folder_instead_of_replacing_one(
    viewer_and_widget, qtbot, tmp_path, notifications
):
    _, widget = viewer_and_widget
    widget.epochs.value = 1
    widget.start_button.clicked()
    qtbot.waitUntil(lambda: widget.job is None, timeout=TIMEOUT_MS)
    first = (tmp_path / "run" / "last.pt").read_bytes()
    widget.seed.value = 1
    widget.start_button.clicked()
    qtbot.waitUntil(lambda: widget.job is None, timeout=TIMEOUT_MS)
    assert Path(widget.output.value) == tmp_path / "run-2" and (tmp_path / "run-2" / "last.pt").is_file()
    assert (tmp_path / "run" / "last.pt").read_bytes() == first
    assert any(f"this run goes to {tmp_path / 'run-2'}" in n.message for n in notifications)


NAPARI_SESSION = """
if __name__ == "__main__":  # the training process re-imports this file: nothing to run there
    import sys, time
    import napari
    from qtpy.QtWidgets import QApplication
    from napari_lightmycells.data.io import read_image
    from napari_lightmycells.widgets.finetune import FinetuneWidget

    study, output = sys.argv[1], sys.argv[2]
    viewer = napari.Viewer(show=False)
    viewer.add_image(read_image(f"{study}/image_1_BF_z0.ome.tiff").data, name="BF")
    viewer.add_image(read_image(f"{study}/image_1_Nucleus.ome.tiff").data, name="Nucleus")
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.pairs[0].input.value, widget.pairs[0].target.value = viewer.layers["BF"], viewer.layers["Nucleus"]
    widget.model.value, widget.crop_size.value, widget.batch_size.value = "unetr_tiny", 64, 1
    widget.epochs.value, widget.val_fraction.value, widget.workers.value = 1000, 0.0, 0
    widget.device.value, widget.output.value = "cpu", output
    widget.start_button.clicked()
    while widget.progress.value < 1:
        QApplication.processEvents()
        time.sleep(0.02)
    print(widget.job._worker.pid, flush=True)
    viewer.close()  # the user quits napari mid-run
"""


@pytest.mark.slow
def test_quitting_napari_mid_run_saves_and_ends_the_training_process(tmp_path):
    study = make_synthetic_study(tmp_path / "study", n_cases=1, size=72, n_planes=1)
    script = tmp_path / "session.py"
    script.write_text(NAPARI_SESSION)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    session = subprocess.Popen(
        [sys.executable, str(script), str(study), str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    child = int(session.stdout.readline())
    quit_at = time.monotonic()
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() - quit_at < 20, "training process still alive 20 s after napari quit"
        time.sleep(0.05)
    _, stderr = session.communicate(timeout=60)
    assert session.returncode == 0, stderr[-2000:]
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["training_state"]["loop"]["step"] >= 1
