"""Fine-tuning engine: learning, exact resume, stop token, encoder initialisation, checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from napari_lightmycells.checkpoint import read_checkpoint, save_checkpoint
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.errors import CheckpointError
from napari_lightmycells.events import StopToken
from napari_lightmycells.loading import load_model
from napari_lightmycells.models import MAE2D, UNETR_PRESETS, mae_config
from napari_lightmycells.training.config import TrainConfig
from napari_lightmycells.training.distributed import DistEnv
from napari_lightmycells.training.engine import make_runtime
from napari_lightmycells.training.finetune import baseline_metrics, build_unetr, finetune, paired_datasets

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_synthetic_study(tmp_path_factory.mktemp("study"), n_cases=10, size=128, n_planes=3, seed=0)


def tiny_config(study, output, **changes) -> TrainConfig:
    base = TrainConfig(
        data=str(study),
        output=str(output),
        model="unetr_tiny",
        crop_size=64,
        batch_size=4,
        epochs=2,
        samples_per_case=4,
        lr=2e-3,
        min_lr=1e-5,
        warmup_epochs=0.5,
        val_fraction=0.2,
        patience=None,
        workers=0,
        device="cpu",
        preview_every=1,
        seed=3,
    )
    return base.replace(**changes)


def step_losses(events: list) -> dict[int, float]:
    return {e.step: e.metrics["loss"] for e in events if e.kind == "step"}


@pytest.mark.slow
def test_finetune_beats_identity_and_mean_baselines(study, tmp_path):
    config = tiny_config(
        study,
        tmp_path / "run",
        batch_size=8,
        samples_per_case=8,
        epochs=20,
        lr=3e-3,
        warmup_epochs=1,
        augment={
            "enabled": True,
            "rotation_p": 0,
            "elastic_p": 0,
            "gridmask_p": 0,
            "brightness_p": 0,
            "contrast_p": 0,
        },
    )
    events = []
    result = finetune(config, callbacks=[events.append])
    assert result.status == "completed" and result.step == 20 * 8

    _, val_set = paired_datasets(config)
    baselines = baseline_metrics(val_set, make_runtime(config, DistEnv(), torch.device("cpu")))
    final = result.history[-1]
    assert final["val_psnr"] > baselines["mean"]["val_psnr"] + 3.0, (final, baselines)
    assert final["val_psnr"] > baselines["identity"]["val_psnr"] + 3.0, (final, baselines)
    assert final["val_loss"] < 0.3 * baselines["mean"]["val_loss"]
    assert final["val_pearson"] > 0.6

    # best.pt is a plain inference checkpoint of the best validation epoch; last.pt can resume.
    _, card = load_model(result.best_path)
    assert card.organelle == "Nucleus" and card.modality == ("BF",)
    assert card.provenance["metrics"]["val_loss"] == pytest.approx(min(h["val_loss"] for h in result.history))
    assert "training_state" not in read_checkpoint(result.best_path)
    assert "training_state" in read_checkpoint(result.last_path)
    kinds = {e.kind for e in events}
    assert {"start", "step", "epoch", "preview", "checkpoint", "done"} <= kinds
    preview = next(e for e in events if e.kind == "preview").images
    assert preview["prediction"].shape == preview["target"].shape == (64, 64)
    assert any(e.eta_s is not None for e in events if e.kind == "step")


def test_resume_reproduces_the_uninterrupted_run(study, tmp_path):
    full = []
    finetune(tiny_config(study, tmp_path / "full"), callbacks=[full.append])

    first = tiny_config(study, tmp_path / "split", max_steps=5)
    result = finetune(first)
    assert result.status == "max_steps" and result.step == 5
    resumed = []
    finetune(
        first.model_copy(update={"max_steps": None, "resume": str(result.last_path)}),
        callbacks=[resumed.append],
    )

    expected, got = step_losses(full), step_losses(resumed)
    assert sorted(got) == list(range(6, 17))  # mid-epoch restart, then across the epoch boundary
    for step in got:
        assert torch.allclose(torch.tensor(got[step]), torch.tensor(expected[step]), rtol=1e-6, atol=0), step


def test_gradient_accumulation_matches_the_full_batch(study, tmp_path, monkeypatch):
    # BatchNorm (the presets' decoder norm) normalises by micro-batch statistics, so only a per-sample norm
    # gives exactly the full batch's losses.
    tiny = dataclasses.replace(UNETR_PRESETS["unetr_tiny"], decoder_norm="in")
    monkeypatch.setitem(UNETR_PRESETS, "unetr_tiny", tiny)
    common = {"max_steps": 3, "augment": {"enabled": False}, "preview_every": 0}
    whole, split = [], []
    finetune(tiny_config(study, tmp_path / "whole", batch_size=4, **common), callbacks=[whole.append])
    finetune(
        tiny_config(study, tmp_path / "split", batch_size=2, accumulate=2, **common), callbacks=[split.append]
    )
    expected, got = step_losses(whole), step_losses(split)
    assert sorted(got) == [1, 2, 3]
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-4), step


def test_stop_token_saves_a_resumable_last_checkpoint(study, tmp_path):
    stop = StopToken()
    events = []

    def stop_at_third_step(event):
        events.append(event)
        if event.kind == "step" and event.step == 3:
            stop.request()

    result = finetune(tiny_config(study, tmp_path / "run"), callbacks=[stop_at_third_step], stop=stop)
    assert result.status == "stopped" and result.step == 3
    state = read_checkpoint(tmp_path / "run" / "last.pt")["training_state"]
    assert state["loop"]["step"] == 3 and state["loop"]["step_in_epoch"] == 3
    assert max(e.step for e in events if e.kind == "step") == 3


def test_early_stopping_when_validation_stops_improving(study, tmp_path):
    # A learning rate too small to change any float32 weight: the validation loss is exactly constant.
    config = tiny_config(
        study, tmp_path / "run", epochs=5, patience=1, lr=1e-12, min_lr=1e-12, preview_every=0
    )
    result = finetune(config)
    assert result.status == "early_stopped" and result.epoch == 2
    state = read_checkpoint(result.last_path)["training_state"]["loop"]
    assert state["early_stopped"] and state["best_epoch"] == 1 and state["bad_validations"] == 1
    assert finetune(config.replace(resume=str(result.last_path))).status == "early_stopped"


def test_resume_refuses_a_checkpoint_without_training_state(study, tmp_path):
    model = build_unetr(tiny_config(study, tmp_path))
    save_checkpoint(tmp_path / "best.pt", model)
    with pytest.raises(CheckpointError, match="last.pt"):
        finetune(tiny_config(study, tmp_path, resume=str(tmp_path / "best.pt")))


def test_encoder_initialised_from_an_mae_checkpoint(study, tmp_path):
    mae = MAE2D(mae_config("mae_tiny"))
    save_checkpoint(tmp_path / "mae.pt", mae)
    model = build_unetr(tiny_config(study, tmp_path, init_encoder=str(tmp_path / "mae.pt")))
    for name, value in mae.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], value), name
