"""The one progress interface of the core.

Long work (prediction, fine-tuning, pretraining) takes ``callbacks`` (callables receiving a
:class:`ProgressEvent`) and a :class:`StopToken`. The CLI turns events into a progress bar and logs,
the napari widgets into progress bars, plots and preview layers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import StopRequested

EVENT_KINDS = ("start", "step", "epoch", "preview", "checkpoint", "log", "done")


@dataclass
class ProgressEvent:
    """One progress report.

    kind: one of ``EVENT_KINDS``. task: ``"predict"``, ``"train"`` or ``"pretrain"``.
    step/total: position in the whole job (tiles, optimiser steps). metrics: losses and scores.
    images: named arrays for display (e.g. ``{"prediction": ..., "target": ...}``).
    output/region: the output (e.g. an organelle) and its part (an index, tuple of slices) that a step
    finished, for progressive display.
    """

    kind: str
    task: str
    step: int = 0
    total: int | None = None
    epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    eta_s: float | None = None
    path: str | None = None
    output: str | None = None
    region: tuple | None = None


Callback = Callable[[ProgressEvent], None]


class StopToken:
    """A thread-safe stop request, checked by long work once per step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`StopRequested` if a stop was requested."""
        if self._event.is_set():
            raise StopRequested()


class Reporter:
    """Sends events to callbacks and estimates the time left from the step rate."""

    def __init__(self, task: str, callbacks: Iterable[Callback] | None = None, total: int | None = None):
        self.task = task
        self.callbacks = list(callbacks or [])
        self.total = total
        self._t0 = time.perf_counter()
        self._first_step: int | None = None

    def emit(self, kind: str, step: int = 0, **fields: Any) -> ProgressEvent:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        fields.setdefault("total", self.total)
        if kind == "step" and fields.get("eta_s") is None:
            fields["eta_s"] = self.eta(step, fields["total"])
        event = ProgressEvent(kind=kind, task=self.task, step=step, **fields)
        for callback in self.callbacks:
            callback(event)
        return event

    def eta(self, step: int, total: int | None) -> float | None:
        """Seconds left, extrapolated from the steps done since the first reported one."""
        if self._first_step is None:
            self._first_step, self._t0 = step, time.perf_counter()
            return None
        done = step - self._first_step
        if not total or done <= 0:
            return None
        rate = (time.perf_counter() - self._t0) / done
        return max(0.0, rate * (total - step))
