"""MAE pretraining: the loss falls, previews are emitted and saved, the checkpoint initialises a UNETR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_lightmycells.checkpoint import load_encoder_state
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.loading import load_model
from napari_lightmycells.training.config import PretrainConfig, TrainConfig, load_config
from napari_lightmycells.training.finetune import build_unetr

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pretraining_lowers_the_loss_and_initialises_a_unetr_encoder(tmp_path):
    from napari_lightmycells.training.pretrain import pretrain

    study = make_synthetic_study(
        tmp_path / "study", n_cases=4, size=128, n_planes=3, modalities=("BF", "PC"), seed=1
    )
    config = load_config(
        "pretrain_tiny",
        PretrainConfig,
        data=str(study),
        output=str(tmp_path / "mae"),
        device="cpu",
        epochs=8,
        save_previews=True,
    )
    events = []
    result = pretrain(config, callbacks=[events.append])

    assert result.status == "completed" and result.step == 8 * (4 * 3 * 4 // 8)
    losses = [h["train_loss"] for h in result.history]
    assert np.mean(losses[-2:]) < 0.8 * losses[0], losses

    previews = [e for e in events if e.kind == "preview"]
    assert [e.epoch for e in previews] == [2, 4, 6, 8]
    images = previews[-1].images
    assert set(images) == {"input", "masked", "reconstruction"}
    assert images["reconstruction"].shape == (64, 2 * 64)
    assert (tmp_path / "mae" / "previews" / "epoch_0008.png").is_file()
    assert (tmp_path / "mae" / "previews" / "epoch_0008.tif").is_file()

    mae, card = load_model(result.last_path)
    assert card.kind == "mae" and card.modality == ("BF", "PC")
    unetr = build_unetr(TrainConfig(model="unetr_tiny", crop_size=64, init_encoder=str(result.last_path)))
    for name, value in mae.encoder.state_dict().items():
        assert torch.equal(unetr.encoder.state_dict()[name], value), name
    assert load_encoder_state(result.best_path).keys() == unetr.encoder.state_dict().keys()
