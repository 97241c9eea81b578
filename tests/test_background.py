"""Background training jobs: events streamed from a spawned process or a thread, stop, errors, and the
process's lifecycle as users run it (GUI gone mid-run, interpreter exit, crash)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from napari_lightmycells.background import TrainingJob, TrainingProcessError, portable_error, portable_event
from napari_lightmycells.checkpoint import read_checkpoint
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.errors import DataError
from napari_lightmycells.events import ProgressEvent
from napari_lightmycells.loading import load_model
from napari_lightmycells.training.config import TrainConfig
from napari_lightmycells.training.finetune import finetune


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


def first_step(job: TrainingJob, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(event.kind == "step" for event in job.poll()):
        assert job.running and time.monotonic() < deadline, job.error
        time.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_detached_process_saves_exits_within_seconds_and_resumes(study, tmp_path):
    """The dock closes mid-run: nobody polls any more, yet the process saves last.pt and exits."""
    config = tiny_config(study, tmp_path / "run", epochs=1000)  # previews every epoch fill the pipe
    job = TrainingJob("train", config).start()
    first_step(job)
    pid = job._worker.pid
    job.detach()
    detached = time.monotonic()
    while job._worker.is_alive() and time.monotonic() - detached < 30:
        time.sleep(0.05)
    exited_after = time.monotonic() - detached
    assert job.finished and gone(pid) and job._worker.exitcode == 0
    assert exited_after < 10, f"process still alive {exited_after:.1f} s after the GUI went away"
    assert job.error is None and job.result.status == "stopped"
    stopped_at = read_checkpoint(job.result.last_path)["training_state"]["loop"]["epoch"]
    resumed = finetune(
        config.replace(epochs=stopped_at + 1, preview_every=0, resume=str(job.result.last_path))
    )
    assert resumed.status == "completed" and resumed.epoch == stopped_at + 1


def test_interpreter_exit_stops_the_process_which_saves_and_exits(study, tmp_path):
    """napari quits mid-run: at exit the job is stopped, its messages read, and the child saves and exits."""
    output = tmp_path / "run"
    script = textwrap.dedent(f"""
        import time
        from napari_lightmycells.background import TrainingJob
        from napari_lightmycells.training.config import TrainConfig
        config = TrainConfig(data={str(study)!r}, output={str(output)!r}, model="unetr_tiny", epochs=1000,
                             batch_size=2, crop_size=64, samples_per_case=2, val_fraction=0.34, warmup_epochs=0,
                             workers=0, device="cpu", preview_every=1, patience=None)
        job = TrainingJob("train", config).start()
        while not any(event.kind == "step" for event in job.poll()):
            time.sleep(0.02)
        print(job._worker.pid, flush=True)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    child = int(process.stdout.readline())
    ended = time.monotonic()
    while not gone(child) and time.monotonic() - ended < 30:
        time.sleep(0.05)
    child_s = time.monotonic() - ended
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]
    assert child_s < 10, f"training process still alive {child_s:.1f} s after the interpreter began to exit"
    state = read_checkpoint(output / "last.pt")["training_state"]
    assert state["loop"]["step"] >= 1


def test_a_crashed_process_is_reported_with_its_signal_and_error_output(study, tmp_path, capfd):
    job = TrainingJob("train", tiny_config(study, tmp_path / "run", epochs=1000)).start()
    first_step(job)
    os.kill(job._worker.pid, signal.SIGSEGV)  # faulthandler writes the Python stacks to the process's stderr
    with pytest.raises(TrainingProcessError) as error:
        job.wait(timeout=30)
    message = str(error.value)
    assert "killed by signal SIGSEGV" in message and 'File "' in message
    assert "Fatal Python error" in capfd.readouterr().err  # the process's stderr is echoed to ours
