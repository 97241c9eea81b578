"""Resume semantics (re-planned schedule, refused changes), NaN/inf steps skipped, the metrics file."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from napari_lightmycells.checkpoint import read_checkpoint
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.errors import ModelError
from napari_lightmycells.training.config import ConfigError, TrainConfig
from napari_lightmycells.training.engine import run
from napari_lightmycells.training.finetune import build_unetr, finetune, finetune_task, paired_datasets
from napari_lightmycells.training.resume import check_resume
from napari_lightmycells.training.schedule import warmup_cosine_factor

pytestmark = pytest.mark.usefixtures("one_thread")

LR, MIN_LR = 1e-3, 1e-5
STEPS_PER_EPOCH = 3  # 3 training cases x 2 samples, batches of 2


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_synthetic_study(tmp_path_factory.mktemp("study"), n_cases=4, size=72, n_planes=2, seed=1)


def tiny_config(study, output, **changes) -> TrainConfig:
    return TrainConfig(
        data=str(study), output=str(output), model="unetr_tiny", crop_size=64, batch_size=2, epochs=2,
        samples_per_case=2, lr=LR, min_lr=MIN_LR, warmup_epochs=0, val_fraction=0.25, patience=None,
        workers=0, device="cpu", preview_every=0, seed=5,
    ).replace(**changes)  # fmt: skip


def step_lrs(events) -> dict[int, float]:
    return {event.step: event.metrics["lr"] for event in events if event.kind == "step"}


def test_more_epochs_on_resume_replan_the_cosine_from_the_current_step(study, tmp_path):
    config = tiny_config(study, tmp_path / "run")
    first = []
    result = finetune(config, [first.append])
    done = 2 * STEPS_PER_EPOCH
    assert step_lrs(first)[done] == pytest.approx(MIN_LR)  # the 2-epoch plan ends at min_lr

    resumed = []
    finetune(config.replace(epochs=4, resume=str(result.last_path)), [resumed.append])
    lrs = step_lrs(resumed)
    total = 4 * STEPS_PER_EPOCH
    assert sorted(lrs) == list(range(done + 1, total + 1))
    expected = {step: LR * warmup_cosine_factor(step, 0, total, MIN_LR / LR) for step in lrs}
    assert lrs == pytest.approx(expected)  # the curve of a run planned with 4 epochs from the start
    assert lrs[done + 1] > 0.3 * LR and lrs[total] == pytest.approx(MIN_LR)  # not stuck at min_lr


def test_resume_refuses_changes_that_cannot_change(study, tmp_path):
    config = tiny_config(study, tmp_path / "run", epochs=1)
    last = str(finetune(config).last_path)
    checkpoint = read_checkpoint(last)
    check_resume(checkpoint, config.replace(resume=last, epochs=3, workers=1, preview_every=2, max_steps=9))
    for change, shown in [
        ({"lr": 5e-3}, "lr 0.001 -> 0.005"),
        ({"batch_size": 1}, "batch_size 2 -> 1"),
        ({"crop_size": 32}, "crop_size 64 -> 32"),
        ({"seed": 6, "loss": "l1"}, "seed 5 -> 6, loss 'mse' -> 'l1'"),
        ({"augment": {"enabled": False}}, "augment {'enabled': True} -> {'enabled': False}"),
    ]:
        with pytest.raises(ConfigError, match="cannot be resumed with other settings") as error:
            finetune(config.replace(resume=last, **change))
        assert shown in str(error.value) and "\n" not in str(error.value)
    config_two = tiny_config(study, tmp_path / "two", epochs=2)
    last_two = str(finetune(config_two).last_path)
    with pytest.raises(ConfigError, match="has already trained 2 epochs: epochs must be at least 2"):
        finetune(config_two.replace(resume=last_two, epochs=1))


def nan_at(calls: set[int] | None, config: TrainConfig, snapshots: list):
    """A fine-tuning task whose loss is NaN at the given (1-based) calls, or always when ``calls`` is None;
    the weights are recorded at every call."""

    def build_task(checkpoint, runtime):
        task = finetune_task(config, build_unetr(config, checkpoint), *paired_datasets(config), runtime)
        loss = task.loss

        def flaky(model, batch):
            snapshots.append([p.detach().clone() for p in model.parameters()])
            value = loss(model, batch)
            return value * float("nan") if calls is None or len(snapshots) in calls else value

        task.loss = flaky
        return task

    return build_task


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_nan_loss_skips_the_step_before_it_touches_the_weights(study, tmp_path):
    config = tiny_config(study, tmp_path / "run")
    snapshots, events = [], []
    result = run(config, nan_at({2}, config, snapshots), [events.append])
    assert not same(snapshots[0], snapshots[1])  # a normal step moves the weights
    assert same(snapshots[1], snapshots[2])  # the NaN step left them as they were
    assert not same(snapshots[2], snapshots[3])  # and training goes on
    assert result.status == "completed" and result.step == 2 * STEPS_PER_EPOCH
    assert any(e.kind == "log" and "step 2: loss nan, step skipped" in e.message for e in events)
    state = read_checkpoint(result.last_path)
    assert all(torch.isfinite(value).all() for value in state["state_dict"].values())
    assert state["training_state"]["loop"]["skipped_steps"] == 1
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert all(math.isfinite(float(row["train_loss"])) for row in rows)


def test_a_loss_that_stays_nan_ends_the_run_with_a_message(study, tmp_path):
    config = tiny_config(study, tmp_path / "run", epochs=4)
    snapshots = []
    with pytest.raises(ModelError, match="loss was nan for 10 steps in a row"):
        run(config, nan_at(None, config, snapshots))
    assert all(same(snapshots[0], snapshot) for snapshot in snapshots)


def test_tensorboard_events_are_written_when_it_is_installed(study, tmp_path):
    pytest.importorskip("tensorboard")
    finetune(tiny_config(study, tmp_path / "run", epochs=1))
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
