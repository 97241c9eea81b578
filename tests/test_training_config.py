"""Training configs (YAML presets, round trip, validation) and the warm-up + cosine schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from napari_lightmycells.training.config import (
    ConfigError,
    PretrainConfig,
    TrainConfig,
    load_config,
    preset_names,
    save_config,
)
from napari_lightmycells.training.schedule import warmup_cosine, warmup_cosine_factor


@pytest.mark.parametrize(
    "name,model",
    [
        ("nucleus", "unetr_paper"),
        ("mitochondria", "unetr_paper"),
        ("tubulin", "unetr_paper_tubulin"),
        ("actin", "unetr_paper"),
    ],
)
def test_organelle_presets_follow_the_paper(name, model):
    config = load_config(name)
    assert config.organelle.lower() == name and config.model == model
    assert (config.loss, config.lr, config.crop_size, config.val_fraction) == ("mse", 1e-4, 1024, 0.1)
    assert (config.epochs, config.patience, config.focus) == (2500, 250, "random")
    assert config.augment_config().enabled


def test_every_preset_loads():
    for name in preset_names():
        load_config(name, PretrainConfig if name.startswith("pretrain") else TrainConfig).augment_config()


def test_yaml_round_trip_and_overrides(tmp_path):
    config = load_config("tiny_cpu", epochs=3, lr=5e-4, data="somewhere")
    assert (config.epochs, config.lr, config.data, config.model) == (3, 5e-4, "somewhere", "unetr_tiny")
    assert load_config(save_config(config, tmp_path / "c.yaml")) == config


def test_invalid_configs_are_user_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="loss"):
        TrainConfig(loss="huber").validate()
    with pytest.raises(ConfigError, match="Unknown preset"):
        load_config("nope")
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig(augment={"flip": True}).augment_config()
    with pytest.raises(ConfigError, match="organelle"):  # a fine-tuning field in a pretraining config
        load_config("nucleus", PretrainConfig)


def test_warmup_then_cosine_to_min_lr():
    factors = [warmup_cosine_factor(step, 10, 110, 0.01) for step in range(120)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.01 + 0.99 * 0.5)
    assert factors[110] == pytest.approx(0.01) and factors[119] == pytest.approx(0.01)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = warmup_cosine(optimizer, warmup_steps=2, total_steps=4, lr=1e-4, min_lr=0.0)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.5e-4, 1e-4, 1e-4, 0.5e-4 * (1 + math.cos(math.pi / 2))])
