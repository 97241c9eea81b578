"""Regenerate docs/images/predict_widget.png.

Fine-tunes a tiny Nucleus model on synthetic data (core training engine), opens the synthetic sample in napari,
predicts it through the Predict widget and saves a screenshot of the whole window. Needs a display:

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/screenshots.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import napari
import torch  # noqa: F401 - import torch before Qt
from qtpy.QtWidgets import QApplication

from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.training.config import load_config
from napari_lightmycells.training.finetune import finetune

IMAGES = Path(__file__).parent / "images"
STACK = "image_1 BF (z-stack)"
SIZE, CROP = 256, 128  # synthetic image and training crop (= prediction tile) sizes


def train_tiny_nucleus_model(folder: Path) -> Path:
    """A tiny Nucleus model fine-tuned by the core engine on a synthetic study (about a minute on a CPU)."""
    study = make_synthetic_study(folder / "study", n_cases=8, size=SIZE, n_planes=3, seed=1)
    config = load_config("tiny_cpu", data=str(study), output=str(folder / "run"), crop_size=CROP, epochs=15)
    return finetune(config).best_path


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the prediction did not finish in time")
        QApplication.processEvents()
        time.sleep(0.05)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = train_tiny_nucleus_model(Path(folder))
        viewer = napari.Viewer()
        viewer.window.resize(1800, 950)
        QApplication.processEvents()
        _, widget = viewer.window.add_plugin_dock_widget("napari-lightmycells", "Predict organelles")
        viewer.open_sample("napari-lightmycells", "synthetic_case")
        widget.image.value = viewer.layers[STACK]
        widget.rows["Nucleus"].file.value = checkpoint
        widget.tile_size.value = CROP
        widget.batch_size.value = 4
        widget.start()
        wait_for(lambda: widget.worker is None)
    viewer.dims.set_point(0, 2)  # the best-focus plane the prediction was made from
    viewer.canvas.grid.shape = (1, 3)  # input | target | prediction side by side
    viewer.canvas.grid.enabled = True
    QApplication.processEvents()
    viewer.reset_view()
    IMAGES.mkdir(exist_ok=True)
    viewer.screenshot(IMAGES / "predict_widget.png", canvas_only=False, flash=False)
    print(f"saved {IMAGES / 'predict_widget.png'}: {widget.status.value}")
    viewer.close()


if __name__ == "__main__":
    main()
