"""Regenerate docs/images/finetune_widget.png and pretrain_widget.png (the training widgets during a run).

Fills a viewer with synthetic BF z-stacks and Nucleus images, starts a small CPU run in each widget (in
a background process, as for users), waits for a few epochs of curves and previews and saves a
screenshot of the whole window. Needs a display:

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/screenshots_training.py
"""

from __future__ import annotations

import torch  # noqa: F401  (before Qt)

# isort: split

import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_lightmycells.data.io import read_image
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.widgets._training import TrainingWidget
from napari_lightmycells.widgets.finetune import FinetuneWidget, PairRow
from napari_lightmycells.widgets.pretrain import PretrainWidget

IMAGES = Path(__file__).parent / "images"
CASES, SIZE, PATCH = 4, 192, 128


def wait_for(condition, timeout: float = 600.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the run did not get far enough in time")
        QApplication.processEvents()
        time.sleep(0.05)


def add_study_layers(viewer: napari.Viewer, study: Path) -> None:
    for index in range(1, CASES + 1):
        stack = np.stack([read_image(study / f"image_{index}_BF_z{z}.ome.tiff").data for z in range(3)])
        viewer.add_image(stack, name=f"BF {index}")
        viewer.add_image(
            read_image(study / f"image_{index}_Nucleus.ome.tiff").data,
            name=f"Nucleus {index}",
            colormap="blue",
            blending="additive",
        )


def configure(widget: TrainingWidget, output: Path) -> None:
    widget.crop_size.value, widget.batch_size.value, widget.epochs.value = PATCH, 4, 200
    widget.workers.value, widget.device.value, widget.output.value = 0, "cpu", output


def screenshot_run(viewer: napari.Viewer, widget: TrainingWidget, name: str, epochs: int) -> None:
    """Start ``widget``, wait for ``epochs`` epochs, show only its previews, save the window, stop."""
    widget.start()
    wait_for(lambda: widget.job is None or len(next(iter(widget.plot.curves.values()), [])) >= epochs)
    for layer in viewer.layers:
        layer.visible = layer.name.startswith(f"{widget.action} preview")
    viewer.reset_view()
    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(IMAGES / name, canvas_only=False, flash=False)
    print(f"saved {IMAGES / name}: {widget.status.value}")
    widget.stop()
    wait_for(lambda: widget.job is None)


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        study = make_synthetic_study(Path(folder) / "study", n_cases=CASES, size=SIZE, n_planes=3, seed=1)
        viewer = napari.Viewer()
        viewer.window.resize(1800, 1050)
        add_study_layers(viewer, study)

        finetune = FinetuneWidget(viewer)
        viewer.window.add_dock_widget(finetune, name="Fine-tune organelle model")
        for _ in range(2, CASES + 1):
            finetune.pairs.append(PairRow(viewer))
        for index, row in enumerate(finetune.pairs, 1):
            row.input.value, row.target.value = (
                viewer.layers[f"BF {index}"],
                viewer.layers[f"Nucleus {index}"],
            )
        finetune.model.value, finetune.val_fraction.value, finetune.samples.value = "unetr_tiny", 0.25, 4
        configure(finetune, Path(folder) / "finetune")
        screenshot_run(viewer, finetune, "finetune_widget.png", epochs=8)

        viewer.window.remove_dock_widget(finetune.native)
        pretrain = PretrainWidget(viewer)
        viewer.window.add_dock_widget(pretrain, name="Pretrain encoder (MAE)")
        pretrain.layers.value = [viewer.layers[f"BF {index}"] for index in range(1, CASES + 1)]
        pretrain.model.value = "mae_tiny"
        configure(pretrain, Path(folder) / "pretrain")
        screenshot_run(viewer, pretrain, "pretrain_widget.png", epochs=8)
        viewer.close()


if __name__ == "__main__":
    main()
