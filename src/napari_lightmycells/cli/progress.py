"""Turns core progress events into a tqdm progress bar and log lines (the CLI's view of events)."""

from __future__ import annotations

import logging

from tqdm import tqdm

from ..events import ProgressEvent

logger = logging.getLogger("lightmycells")


class ProgressBar:
    """Callback for :class:`~napari_lightmycells.events.Reporter`: one bar per job, metrics as postfix."""

    def __init__(self, description: str, disable: bool | None = None):
        self.description = description
        self.disable = disable
        self.bar: tqdm | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "start":
            self.close()
            self.bar = tqdm(total=event.total, desc=self.description, unit="step", disable=self.disable)
        elif event.kind == "step" and self.bar is not None:
            if event.total is not None and self.bar.total != event.total:
                self.bar.total = event.total
            self.bar.update(event.step - self.bar.n)
            if event.metrics:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in event.metrics.items()}, refresh=False)
        elif event.kind in ("epoch", "checkpoint", "log"):
            text = event.message or ", ".join(f"{k}={v:.4g}" for k, v in event.metrics.items())
            (self.bar.write if self.bar is not None else logger.info)(text)
        elif event.kind == "done":
            self.close()
            if event.message:
                logger.info(event.message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
