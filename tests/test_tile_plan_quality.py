"""Quality guard of the tile plan on real data: a tiny UNETR trained on a real crop predicts a held-out
region in the planned (larger) tiles about as well as in tiles of its training size (the reference).

Stated tolerance: the Pearson correlation with the real Nucleus image drops by at most 0.03, and the
planned prediction differs from the reference by at most 0.25 of the reference's standard deviation
(changing the overlap alone, 0.125 -> 0.25, already moves it by ~0.16 here).
"""

import numpy as np
import pytest
import torch

from napari_lightmycells.data.focus import best_focus_index
from napari_lightmycells.data.io import read_image
from napari_lightmycells.data.normalize import normalize
from napari_lightmycells.inference.predictor import Predictor
from napari_lightmycells.inference.tiling import TileGrid, plan_tiles
from napari_lightmycells.models import create_model

CROP = 64  # the tiny model's training size: the reference tile


@pytest.fixture(scope="module")
def trained_on_real_crop(real_studies):
    """``unetr_tiny`` trained for 120 steps (~20 s) on the left 768 columns of a real BF/DAPI field, and the
    held-out BF and DAPI region on the right."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = real_studies / "sephace"
    planes = np.stack([read_image(folder / f"image_1_BF_z{z}.ome.tiff").data for z in range(6)])
    bf = planes[best_focus_index(planes)].astype(np.float32)
    dapi = read_image(folder / "image_1_Nucleus.ome.tiff").data.astype(np.float32)
    x, y = normalize(bf[:, :768])[0], normalize(dapi[:, :768])[0]
    model = create_model("unetr_tiny")
    optimiser = torch.optim.AdamW(model.parameters(), 2e-3)
    rng = np.random.default_rng(0)
    for _ in range(120):
        corners = zip(rng.integers(0, x.shape[0] - CROP, 8), rng.integers(0, x.shape[1] - CROP, 8))
        pairs = [(x[r : r + CROP, c : c + CROP], y[r : r + CROP, c : c + CROP]) for r, c in corners]
        inputs, targets = (torch.from_numpy(np.stack(side))[:, None] for side in zip(*pairs))
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch.set_num_threads(threads)
    return model.eval(), bf[300:684, 850:1234], dapi[300:684, 850:1234]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_planned_tiles_predict_real_data_as_well_as_training_size_tiles(trained_on_real_crop):
    model, image, target = trained_on_real_crop
    planned_grid = plan_tiles(image.shape, CROP, model.token_size, 0.125)
    reference_grid = TileGrid.plan(image.shape, CROP, 8)
    assert planned_grid.tile > CROP and planned_grid.computed_pixels() < reference_grid.computed_pixels()

    reference = Predictor({"Nucleus": model}, "cpu", tile_size=CROP, tile_growth=1.0).predict(image)[
        "Nucleus"
    ]
    planned = Predictor({"Nucleus": model}, "cpu", tile_size=CROP).predict(image)["Nucleus"]

    def pearson(prediction):
        return np.corrcoef(prediction.ravel(), target.ravel())[0, 1]

    assert pearson(reference) > 0.5  # the model learned something: the guard is not vacuous
    assert pearson(planned) >= pearson(reference) - 0.03
    assert np.sqrt(np.mean((planned - reference) ** 2)) <= 0.25 * reference.std()
