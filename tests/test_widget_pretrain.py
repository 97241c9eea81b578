"""Pretrain widget: a tiny MAE run from layers with masked/reconstruction previews, stop, hand-off to Fine-tune."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex
from napari.utils.theme import get_theme

from napari_lightmycells.loading import load_model
from napari_lightmycells.widgets.finetune import FinetuneWidget
from napari_lightmycells.widgets.pretrain import PretrainWidget

TIMEOUT_MS = 60_000


@pytest.fixture
def viewer_and_widget(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    for index in (1, 2):
        viewer.add_image(rng.normal(100, 10, (2, 72, 72)).astype(np.float32), name=f"BF {index}")
    widget = PretrainWidget(viewer, mode="thread")
    viewer.window.add_dock_widget(widget, name="Pretrain")
    widget.layers.value = [viewer.layers["BF 1"], viewer.layers["BF 2"]]
    widget.model.value, widget.crop_size.value, widget.batch_size.value = "mae_tiny", 64, 2
    widget.epochs.value, widget.workers.value, widget.device.value = 1000, 0, "cpu"
    widget.output.value = tmp_path / "mae"
    return viewer, widget


def test_pretrain_shows_reconstructions_and_hands_the_encoder_to_finetune(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    finetune = FinetuneWidget(viewer, mode="thread")
    viewer.window.add_dock_widget(finetune, name="Fine-tune")

    widget.start_button.clicked()
    qtbot.waitUntil(lambda: "Pretraining preview: reconstruction" in viewer.layers, timeout=TIMEOUT_MS)
    assert "Pretraining preview: masked" in viewer.layers and "train_loss" in widget.plot.curves
    assert [layer.name for layer in widget.layers.choices] == [
        "BF 1",
        "BF 2",
    ]  # previews are not training data
    widget.stop_button.clicked()
    qtbot.waitUntil(lambda: widget.job is None, timeout=TIMEOUT_MS)

    assert "stopped" in widget.status.value
    encoder = Path(finetune.init.value)
    assert encoder.parent == Path(widget.output.value) and finetune.model.value == "unetr_tiny"
    assert load_model(encoder)[1].kind == "mae"


def test_no_layer_chosen_is_refused(viewer_and_widget, notifications):
    _, widget = viewer_and_widget
    widget.layers.value = []
    widget.start_button.clicked()
    assert widget.job is None and "No image layers chosen" in notifications[-1].message


def test_training_plot_follows_the_viewer_theme(viewer_and_widget):
    viewer, widget = viewer_and_widget
    widget.plot.add_epoch(1, {"train_loss": 0.5})

    def shown(theme):
        colors = get_theme(theme)
        legend = widget.plot.loss_axis.get_legend()
        return (
            to_hex(widget.plot.figure.get_facecolor()) == colors.background.as_hex()
            and to_hex(widget.plot.loss_axis.get_facecolor()) == colors.background.as_hex()
            and to_hex(widget.plot.loss_axis.title.get_color()) == colors.text.as_hex()
            and to_hex(legend.get_texts()[0].get_color()) == colors.text.as_hex()
        )

    assert viewer.theme == "dark" and shown("dark")  # napari's default
    viewer.theme = "light"
    assert shown("light") and not shown("dark")
