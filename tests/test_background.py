"""Background training jobs: events streamed from a spawned process or a thread, stop, errors."""

import numpy as np
import pytest
import torch

from napari_lightmycells.background import TrainingJob, portable_error, portable_event
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.errors import DataError
from napari_lightmycells.events import ProgressEvent
from napari_lightmycells.loading import load_model
from napari_lightmycells.training.config import TrainConfig


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_synthetic_study(tmp_path_factory.mktemp("bg_study"), n_cases=3, size=80, n_planes=2)


def tiny_config(study, output, **changes) -> TrainConfig:
    values = {
        "data": str(study),
        "output": str(output),
        "model": "unetr_tiny",
        "epochs": 3,
        "batch_size": 2,
        "crop_size": 64,
        "samples_per_case": 2,
        "val_fraction": 0.34,
        "warmup_epochs": 0,
        "workers": 0,
        "device": "cpu",
        "preview_every": 1,
        "patience": None,
    }
    return TrainConfig(**{**values, **changes})


def test_process_job_streams_events_and_stops_with_a_checkpoint(study, tmp_path):
    job = TrainingJob("train", tiny_config(study, tmp_path, epochs=1000)).start()
    events = []

    def on_event(event):
        events.append(event)
        if event.kind == "preview":
            job.request_stop()

    result = job.wait(timeout=90, on_event=on_event)
    kinds = [event.kind for event in events]
    assert kinds[0] == "start" and "step" in kinds and "epoch" in kinds and kinds[-1] == "done"
    preview = next(event for event in events if event.kind == "preview")
    assert isinstance(preview.images["prediction"], np.ndarray) and preview.images["prediction"].shape == (
        64,
        64,
    )
    assert result.status == "stopped" and result.last_path.is_file()
    _, card = load_model(result.last_path)
    assert card.organelle == "Nucleus"
    assert not job.running and job.poll() == []


def test_thread_job_runs_to_completion(study, tmp_path):
    job = TrainingJob("train", tiny_config(study, tmp_path, epochs=2), mode="thread").start()
    result = job.wait(timeout=60)
    assert result.status == "completed" and result.epoch == 2 and result.best_path.is_file()


def test_errors_in_the_job_come_back_with_their_message(tmp_path):
    job = TrainingJob("train", tiny_config(tmp_path / "missing", tmp_path / "out"), mode="thread").start()
    with pytest.raises(DataError):
        job.wait(timeout=30)
    assert isinstance(job.error, DataError) and "missing" in str(job.error)
    assert job.error.child_traceback.startswith("Traceback")


def test_unpicklable_errors_become_runtime_errors():
    class Local(Exception):
        pass

    error = portable_error(Local("disk full"))
    assert isinstance(error, RuntimeError) and str(error) == "Local: disk full"


def test_event_images_become_numpy():
    event = ProgressEvent("preview", "train", images={"prediction": torch.ones(2, 2, requires_grad=True)})
    assert isinstance(portable_event(event).images["prediction"], np.ndarray)


def test_unknown_task_or_mode_is_refused(tmp_path):
    with pytest.raises(ValueError):
        TrainingJob("segment", None)
    with pytest.raises(ValueError):
        TrainingJob("train", None, mode="cluster")
