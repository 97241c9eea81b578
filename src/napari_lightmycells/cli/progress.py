"""The CLI's view of core progress events: one bar with ETA on a terminal, periodic lines elsewhere.

What is shown follows the ``lightmycells`` log level (``-q``: warnings only, ``-v``: debug): at the
default level, one bar over the whole job (or a line every ``interval_s`` seconds with the ETA when
stderr is not a terminal), one line per epoch and per message; nothing else.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

from ..events import ProgressEvent

logger = logging.getLogger("lightmycells")
LOGGERS = ("lightmycells", "napari_lightmycells")  # the CLI's and the core's


def set_log_level(level: int) -> None:
    """Level of the CLI's and the core's messages (other libraries stay at warnings)."""
    for name in LOGGERS:
        logging.getLogger(name).setLevel(level)


def progress_shown() -> bool:
    """Progress and per-item lines are shown at the default level and with ``-v``, not with ``-q``."""
    return logger.isEnabledFor(logging.INFO)


class ProgressBar:
    """Callback for :class:`~napari_lightmycells.events.Reporter` writing to stderr."""

    def __init__(self, description: str, bar: bool = True, interval_s: float = 30.0, enabled: bool = True):
        self.description = description
        self.use_bar = bar
        self.interval_s = interval_s
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.eta_s: float | None = None
        self._last_line = 0.0

    @property
    def shown(self) -> bool:
        return self.enabled and progress_shown()

    def __call__(self, event: ProgressEvent) -> None:
        if not self.shown:
            return
        if event.kind == "start":
            self.close()
            if self.use_bar and sys.stderr.isatty():
                self.bar = tqdm(
                    total=event.total,
                    initial=event.step,
                    desc=self.description,
                    unit="step",
                    dynamic_ncols=True,
                )
            self._last_line = time.monotonic()
            self.write(event.message)
        elif event.kind == "step":
            self._step(event)
        elif event.kind == "epoch":
            shown = ", ".join(f"{k} {v:.4g}" for k, v in event.metrics.items() if k != "epoch_time_s")
            self.write(f"epoch {event.epoch}: {shown}" + ("" if self.bar else self._position(event)))
        elif event.kind == "log":  # with a path: the result of one input, a result line on stdout
            self.write(event.message, sys.stdout if event.path else sys.stderr)
        elif event.kind == "done":
            self.close()
            self.write(event.message + (f" ({event.path})" if event.path else ""))

    def _step(self, event: ProgressEvent) -> None:
        self.eta_s = event.eta_s
        if self.bar is not None:
            if event.total is not None and self.bar.total != event.total:
                self.bar.total = event.total
            self.bar.update(event.step - self.bar.n)
            if "loss" in event.metrics:
                self.bar.set_postfix(epoch=event.epoch, loss=f"{event.metrics['loss']:.4f}", refresh=False)
        elif time.monotonic() - self._last_line >= self.interval_s:
            self.write(f"{self.description}{self._position(event)}")

    def _position(self, event: ProgressEvent) -> str:
        """`` [step 40/120 (33%), ETA 3.5 min]`` for lines written without a bar."""
        if not event.total:
            return ""
        eta = f", ETA {format_seconds(self.eta_s)}" if self.eta_s is not None else ""
        return f" [step {event.step}/{event.total} ({event.step / event.total:.0%}){eta}]"

    def write(self, message: str, file=None) -> None:
        if not message:
            return
        file = file or sys.stderr
        self._last_line = time.monotonic()
        if self.bar is not None:
            self.bar.write(message, file=file)
        else:
            print(message, file=file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
