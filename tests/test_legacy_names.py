"""Configs, checkpoints, packages and flags written with the old ``patch_size``/``img_size`` names still work."""

from __future__ import annotations

import pytest
import torch

from napari_lightmycells.checkpoint import atomic_save, read_checkpoint, save_checkpoint
from napari_lightmycells.cli import build_parser
from napari_lightmycells.cli.train import COMMON_FLAGS, TRAIN_FLAGS, resolve_config
from napari_lightmycells.loading import load_model
from napari_lightmycells.model_zoo.architecture import config_from_standalone_kwargs, standalone_kwargs
from napari_lightmycells.models import create_model
from napari_lightmycells.training.config import TrainConfig, load_config
from napari_lightmycells.training.engine import config_from_checkpoint


def old_encoder(encoder: dict) -> dict:
    encoder = dict(encoder)
    encoder["img_size"], encoder["patch_size"] = encoder.pop("crop_size"), encoder.pop("token_size")
    return encoder


def test_old_yaml_patch_size_is_the_crop_size(tmp_path):
    (tmp_path / "old.yaml").write_text("model: unetr_tiny\npatch_size: 96\nepochs: 3\n")
    config = load_config(tmp_path / "old.yaml")
    assert (config.crop_size, config.epochs) == (96, 3)
    assert "patch_size" not in config.to_dict()


def test_old_checkpoint_loads_and_resumes(tmp_path):
    torch.manual_seed(0)
    model = create_model("unetr_tiny").eval()
    new = save_checkpoint(
        tmp_path / "new.pt",
        model,
        organelle="Nucleus",
        training_state={"config": TrainConfig(model="unetr_tiny", crop_size=64).to_dict()},
    )
    payload = read_checkpoint(new)
    payload["config"]["encoder"] = old_encoder(payload["config"]["encoder"])
    stored = payload["training_state"]["config"]
    stored["patch_size"] = stored.pop("crop_size")
    old = atomic_save(payload, tmp_path / "old.pt")

    loaded, card = load_model(old)
    assert (card.config.encoder.crop_size, card.config.encoder.token_size) == (64, 8)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    config = config_from_checkpoint(str(old), TrainConfig)
    assert (config.crop_size, config.resume) == (64, str(old))


def test_bioimageio_kwargs_with_old_names():
    config = create_model("unetr_tiny").config
    kwargs = standalone_kwargs(config)
    assert (kwargs["crop_size"], kwargs["token_size"]) == (64, 8)
    assert config_from_standalone_kwargs(old_encoder(kwargs)) == config_from_standalone_kwargs(kwargs)


def test_patch_size_flag_is_a_deprecated_alias_of_crop_size(capsys):
    parser, _ = build_parser()
    args = parser.parse_args(["train", "--preset", "tiny_cpu", "--patch-size", "128"])
    assert "--patch-size is deprecated, use --crop-size" in capsys.readouterr().err
    assert resolve_config(args, TrainConfig, COMMON_FLAGS + TRAIN_FLAGS, "nucleus").crop_size == 128
    args = parser.parse_args(["train", "--preset", "tiny_cpu", "--crop-size", "96"])
    assert capsys.readouterr().err == ""
    assert resolve_config(args, TrainConfig, COMMON_FLAGS + TRAIN_FLAGS, "nucleus").crop_size == 96
    assert "--patch-size" not in parser._subparsers._group_actions[0].choices["train"].format_help()


@pytest.mark.parametrize("flag", ["--crop-size", "--patch-size"])
def test_crop_size_flag_sets_the_training_crop(flag):
    parser, _ = build_parser()
    args = parser.parse_args(["pretrain", "--preset", "pretrain_tiny", flag, "32"])
    assert args.crop_size == 32
