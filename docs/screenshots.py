"""Regenerate docs/images/predict_widget.png.

Trains a tiny Nucleus model on synthetic data for a few seconds, opens the synthetic sample in napari,
predicts it through the Predict widget and saves a screenshot of the whole window. Needs a display:

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/screenshots.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import torch  # before Qt
from qtpy.QtWidgets import QApplication

from napari_lightmycells.checkpoint import save_checkpoint
from napari_lightmycells.data.io import read_image
from napari_lightmycells.data.normalize import normalize
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.models import UNETR2D, unetr_config

IMAGES = Path(__file__).parent / "images"
STACK = "image_1 BF (z-stack)"
SIZE, CROP = 256, 128  # synthetic image and training crop (= prediction tile) sizes


def train_tiny_nucleus_model(path: Path, seconds: float = 45.0) -> Path:
    """A 128 px ``unetr_tiny`` fitted on crops of synthetic best-focus BF planes -> Nucleus (z-scored MSE)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        make_synthetic_study(folder, n_cases=8, size=SIZE, n_planes=3, seed=1)
        pairs = [
            (
                normalize(read_image(Path(folder) / f"image_{i}_BF_z1.ome.tiff").data)[0],
                normalize(read_image(Path(folder) / f"image_{i}_Nucleus.ome.tiff").data)[0],
            )
            for i in range(1, 9)
        ]
    model = UNETR2D(unetr_config("unetr_tiny", img_size=CROP))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        crops = []
        for source, target in (pairs[i] for i in rng.integers(0, len(pairs), 8)):
            y, x = rng.integers(0, SIZE - CROP, 2)
            crops.append(np.stack([source[y : y + CROP, x : x + CROP], target[y : y + CROP, x : x + CROP]]))
        batch = torch.from_numpy(np.stack(crops))
        loss = torch.nn.functional.mse_loss(model(batch[:, :1]), batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"trained for {seconds:.0f} s, last loss {loss.item():.3f}")
    return save_checkpoint(path, model, organelle="Nucleus", modality=("BF",))


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the prediction did not finish in time")
        QApplication.processEvents()
        time.sleep(0.05)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = train_tiny_nucleus_model(Path(folder) / "tiny_nucleus.pt")
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
    viewer.grid.shape = (1, 3)  # input | target | prediction side by side
    viewer.grid.enabled = True
    QApplication.processEvents()
    viewer.reset_view()
    IMAGES.mkdir(exist_ok=True)
    viewer.screenshot(IMAGES / "predict_widget.png", canvas_only=False, flash=False)
    print(f"saved {IMAGES / 'predict_widget.png'}: {widget.status.value}")
    viewer.close()


if __name__ == "__main__":
    main()
