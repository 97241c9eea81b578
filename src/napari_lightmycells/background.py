"""Training jobs in the background: a spawned process (default) or a thread, streaming progress events.

The GUI starts a :class:`TrainingJob`, calls :meth:`TrainingJob.poll` from its event loop to receive
:class:`~napari_lightmycells.events.ProgressEvent` objects (images as numpy arrays), and
:meth:`TrainingJob.request_stop` to stop (the run saves ``last.pt`` and can be resumed). In a process,
training holds neither the GUI's interpreter lock nor its GPU memory, which is freed when the process ends.

A process can only exit once its queued messages are read, so a job whose GUI goes away (dock closed)
is :meth:`~TrainingJob.detach`-ed: it stops and a thread keeps reading until the process has ended; at
interpreter exit every job is stopped the same way. The process's stderr goes to a temporary log
(echoed to ours), whose last lines explain an abnormal end together with its exit code or signal.
"""

from __future__ import annotations

import atexit
import faulthandler
import gc
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import tempfile
import threading
import time
import traceback
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LightMyCellsError
from .events import Callback, ProgressEvent, StopToken

TASKS = ("train", "pretrain")
MODES = ("process", "thread")
EXIT_GRACE_S = 120.0  # at interpreter exit, time a stopping job gets to finish its step and save last.pt
POLL_S = 0.05
LOG_TAIL_LINES = 8

_running: weakref.WeakSet[TrainingJob] = weakref.WeakSet()


class TrainingProcessError(LightMyCellsError):
    """The training process ended without reporting a result (crashed or was killed)."""


def run_training(task: str, config, callbacks: list[Callback], stop: StopToken):
    """Run fine-tuning (``"train"``) or MAE pretraining (``"pretrain"``) and return its ``TrainResult``."""
    if task == "train":
        from .training.finetune import finetune

        return finetune(config, callbacks, stop)
    if task == "pretrain":
        from .training.pretrain import pretrain

        return pretrain(config, callbacks, stop)
    raise ValueError(f"Unknown task {task!r}: expected one of {', '.join(TASKS)}.")


class TrainingJob:
    """One training run in the background; poll it from the GUI thread."""

    def __init__(self, task: str, config, mode: str = "process"):
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}: expected one of {', '.join(TASKS)}.")
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}: expected one of {', '.join(MODES)}.")
        self.task, self.config, self.mode = task, config, mode
        self.result = None  # TrainResult once finished
        self.error: BaseException | None = None
        self.finished = False
        self._worker: multiprocessing.Process | threading.Thread | None = None
        self._lock = threading.Lock()  # poll() runs in the GUI thread, or in the thread of a detached job
        self._log: Path | None = None  # the process's stderr
        self._log_offset = 0

    def start(self) -> TrainingJob:
        if self.mode == "process":
            context = multiprocessing.get_context("spawn")
            self._messages = context.Queue()
            self._stop = context.Event()
            fd, log = tempfile.mkstemp(prefix=f"lightmycells-{self.task}-", suffix=".log")
            os.close(fd)
            self._log = Path(log)
            self._worker = context.Process(
                target=_process_main,
                args=(self.task, self.config, self._messages, self._stop, log),
                name=f"lightmycells-{self.task}",
            )
        else:
            self._messages = queue.Queue()
            self._stop = StopToken()
            self._worker = threading.Thread(
                target=_report_run,
                args=(self.task, self.config, self._messages, self._stop),
                name=f"lightmycells-{self.task}",
                daemon=True,
            )
        self._worker.start()
        _running.add(self)
        # Exit handlers run last-registered first: ours must stop the run before multiprocessing's joins it.
        atexit.unregister(_stop_running_jobs)
        atexit.register(_stop_running_jobs)
        return self

    @property
    def running(self) -> bool:
        return self._worker is not None and not self.finished

    def request_stop(self) -> None:
        """Ask the run to stop before its next step; it saves ``last.pt`` and reports ``done``."""
        if self._worker is not None:
            (self._stop.set if self.mode == "process" else self._stop.request)()

    def poll(self) -> list[ProgressEvent]:
        """Events received since the last call (never blocks); sets ``result``/``error`` at the end."""
        with self._lock:
            if not self.running:
                return []
            alive = self._worker.is_alive()  # read before draining: a finished worker has sent everything
            events = []
            while not self.finished:
                try:
                    kind, payload = self._messages.get_nowait()
                except queue.Empty:
                    break
                if kind == "event":
                    events.append(payload)
                else:
                    self._finish(payload if kind == "result" else None, payload if kind == "error" else None)
            self._echo_log()
            if not alive and not self.finished:
                self._finish(None, TrainingProcessError(self._abnormal_end()))
            return events

    def detach(self) -> None:
        """Nobody will poll any more (the dock closed): stop the run, and read its messages in a daemon
        thread until it has saved ``last.pt`` and ended, so that the process can exit."""
        self.request_stop()
        if self.running:
            threading.Thread(target=self._drain, name=f"lightmycells-{self.task}-drain", daemon=True).start()

    def _drain(self, timeout: float | None = None) -> None:
        """Read messages until the run has reported its end, then wait for the worker to exit."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running and (deadline is None or time.monotonic() < deadline):
            self.poll()
            if self.running:
                self._worker.join(POLL_S)
        self._worker.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))

    def wait(self, timeout: float | None = None, on_event: Callback | None = None, interval: float = 0.05):
        """Block until the run ends (for scripts and tests); return its result or raise its error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            for event in self.poll():
                if on_event is not None:
                    on_event(event)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.task} job still running after {timeout} s")
            if self.running:
                time.sleep(interval)
        if self.error is not None:
            raise self.error
        return self.result

    def terminate(self, grace_s: float = EXIT_GRACE_S) -> None:
        """Stop the run and read its messages until it ends (it saves ``last.pt``); kill a process still
        alive after ``grace_s``."""
        if not self.running:
            return
        self.request_stop()
        self._drain(grace_s)
        if isinstance(self._worker, multiprocessing.process.BaseProcess) and self._worker.is_alive():
            self._worker.kill()
            self._worker.join()
        self.poll()

    def _finish(self, result, error: BaseException | None) -> None:
        self.result, self.error, self.finished = result, error, True
        if self._log is not None:
            self._echo_log()
            self._log.unlink(missing_ok=True)
        _running.discard(self)

    def _echo_log(self) -> None:
        """Copy what the process wrote to its stderr since the last call to ours."""
        if self._log is None or not self._log.is_file():
            return
        with self._log.open("rb") as handle:
            handle.seek(self._log_offset)
            new = handle.read()
        if new:
            self._log_offset += len(new)
            sys.stderr.write(new.decode(errors="replace"))
            sys.stderr.flush()

    def _abnormal_end(self) -> str:
        """Why the process ended without a result: exit code or signal, and its last stderr lines."""
        code = getattr(self._worker, "exitcode", None)
        if code is not None and code < 0:
            how = f"was killed by signal {_signal_name(-code)}"
            if -code == signal.SIGKILL:
                how += " (as the system does when it runs out of memory)"
        else:
            how = f"exited with code {code}"
        tail = _tail(self._log, LOG_TAIL_LINES) if self._log is not None else ""
        return f"The {self.task} process {how} without reporting a result." + (
            f" Last lines of its error output:\n{tail}" if tail else " It wrote no error output."
        )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _tail(path: Path, lines: int) -> str:
    if not path.is_file():
        return ""
    text = path.read_bytes()[-16384:].decode(errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def _process_main(task: str, config, messages, stop_event, log: str) -> None:
    """Entry point of the spawned process: stderr to ``log``, forward the stop event, run, report."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 2)
    os.close(fd)
    faulthandler.enable()  # a native crash leaves its Python traceback in the log
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is for the GUI, which stops us
    stop = StopToken()
    threading.Thread(target=_forward_stop, args=(stop_event, stop, messages), daemon=True).start()
    _report_run(task, config, messages, stop)
    messages.close()
    messages.join_thread()  # every message is in the pipe (unless the parent died: then none waits)
    sys.stderr.flush()
    os._exit(0)  # checkpoints are on disk: skip the slow interpreter teardown (seconds with torch loaded)


def _forward_stop(stop_event, stop: StopToken, messages, interval: float = 0.5) -> None:
    """Turn the parent's stop event (or the parent's death) into ``stop.request()``."""
    parent = multiprocessing.parent_process()
    while not stop_event.wait(interval):
        if parent is not None and not parent.is_alive():
            messages.cancel_join_thread()  # nobody will read them: exit without waiting
            break
    stop.request()


def _report_run(task: str, config, messages, stop: StopToken) -> None:
    """Run ``task``, putting ``("event", e)``, then ``("result", r)`` or ``("error", exc)`` on ``messages``."""
    try:
        result = run_training(
            task, config, [lambda event: messages.put(("event", portable_event(event)))], stop
        )
        messages.put(("result", result))
    except BaseException as error:
        messages.put(("error", portable_error(error)))
    finally:
        release_memory()


def portable_event(event: ProgressEvent) -> ProgressEvent:
    """The event with its images as CPU numpy arrays (picklable, and safe to keep after the step)."""
    if not event.images:
        return event
    images = {name: _to_numpy(image) for name, image in event.images.items()}
    return ProgressEvent(**{**vars(event), "images": images})


def portable_error(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a ``RuntimeError`` with its type and message; the
    traceback text rides along as ``error.child_traceback``."""
    text = "".join(traceback.format_exception(error))
    try:
        error.child_traceback = text
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        portable = RuntimeError(f"{type(error).__name__}: {error}")
        portable.child_traceback = text
        return portable


def release_memory() -> None:
    """Return cached GPU memory to the driver (a thread job shares its process with the GUI)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _to_numpy(image: Any) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    return np.asarray(image)


def _stop_running_jobs() -> None:
    """At exit, stop jobs (they save ``last.pt``) so multiprocessing does not wait for whole runs."""
    for job in list(_running):
        job.terminate()
