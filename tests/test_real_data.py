"""A tiny model fine-tuned on a real crop (isl phase contrast -> DAPI, ``real_trained_nucleus`` in conftest):
it must beat the identity baseline on a held-out crop, and tiling must neither show seams nor change the result
much compared with predicting the whole crop at once. Skips without ``../shared/data/real-studies``."""

import numpy as np
import pytest

from napari_lightmycells.data.focus import best_focus_index
from napari_lightmycells.inference.predictor import Predictor
from napari_lightmycells.inference.seams import seam_ratio, tile_edges
from napari_lightmycells.inference.tiling import DEFAULT_OVERLAP
from napari_lightmycells.metrics import compute_metrics, pearson

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def in_focus(real_trained_nucleus):
    planes = real_trained_nucleus.planes
    return planes[best_focus_index(np.stack(planes))]


def test_fine_tuned_tiny_model_beats_the_identity_baseline_on_a_held_out_crop(
    real_trained_nucleus, one_thread
):
    predictor = Predictor({"Nucleus": real_trained_nucleus.checkpoint}, device="cpu")
    target = real_trained_nucleus.target
    for z, plane in enumerate(real_trained_nucleus.planes):
        model = compute_metrics(predictor.predict(plane)["Nucleus"], target)
        identity = compute_metrics(plane, target)
        assert model["PCC"] > identity["PCC"] + 0.3, z  # measured: 0.56-0.66 vs -0.05-0.07
        assert model["SSIM"] > identity["SSIM"] and model["MAE"] < identity["MAE"], z
        assert model["PSNR"] > identity["PSNR"] + 3, z


def test_default_tiling_leaves_no_seams_and_the_metric_sees_them_without_blending(
    real_trained_nucleus, in_focus, one_thread
):
    checkpoint = real_trained_nucleus.checkpoint
    default = Predictor({"Nucleus": checkpoint}, device="cpu")
    grid = default.tile_grid(in_focus.shape, "Nucleus")
    assert grid.tile >= 128 and len(grid) > 1  # the training crop or larger, several tiles on 512²
    assert grid.overlap == round(DEFAULT_OVERLAP * 128) == 50  # BiaPy's share of context: 200/1024 per side
    assert seam_ratio(default.predict(in_focus)["Nucleus"], *tile_edges(grid)) <= 1.1  # measured 1.01
    hard = Predictor({"Nucleus": checkpoint}, device="cpu", overlap=0.0, tile_growth=1.0)
    hard_grid = hard.tile_grid(in_focus.shape, "Nucleus")
    assert seam_ratio(hard.predict(in_focus)["Nucleus"], *tile_edges(hard_grid)) > 1.5  # measured 2.7


def test_tiled_prediction_is_close_to_the_whole_crop_at_once(real_trained_nucleus, in_focus, one_thread):
    """The ViT attends over the whole tile, so tiles and one 512² pass differ a little; tiles of the training
    size are no worse (here better: the model never saw a 512² image in training)."""
    checkpoint, target = real_trained_nucleus.checkpoint, real_trained_nucleus.target
    tiled = Predictor({"Nucleus": checkpoint}, device="cpu").predict(in_focus)["Nucleus"]
    whole_predictor = Predictor({"Nucleus": checkpoint}, device="cpu", tile_size=512, tile_growth=1.0)
    assert len(whole_predictor.tile_grid(in_focus.shape, "Nucleus")) == 1
    whole = whole_predictor.predict(in_focus)["Nucleus"]
    assert pearson(tiled, whole) >= 0.85  # measured 0.94 (0.90-0.93 with overlap 0.125)
    assert pearson(tiled, target) >= pearson(whole, target) - 0.05  # measured 0.65 vs 0.59
