"""The run panel shared by the Fine-tune and Pretrain widgets.

Training runs in a background process (:mod:`napari_lightmycells.background`); a Qt timer polls its
events into a progress bar, a loss/PSNR plot and preview layers. Stop saves ``last.pt``; ticking
"resume" continues that run.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
import torch  # noqa: F401  (imported before Qt, as torch requires on some platforms)
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    Widget,
)
from napari.layers import Image
from napari.utils.notifications import show_info
from qtpy.QtCore import QTimer

from ..background import TrainingJob
from ..devices import DEVICE_CHOICES
from ..errors import DataError, LightMyCellsError
from ..events import ProgressEvent
from ..training.config import RunConfig, TrainConfig
from ..training.engine import LAST, config_from_checkpoint
from ..training.run_folder import next_free_folder
from ._help import TRAINING, add_tooltips
from ._plot import TrainingPlot
from ._tasks import notify_error

POLL_MS = 100
LAYERS, FOLDER = "image layers", "study folder"
LAYERS_STUDY = "layers_study"  # inside the output folder, so that a resumed run finds its data again
CHECKPOINT_FILTER = "*.pt *.pth *.ckpt"
TRAINING_MEMORY_HINT = "Lower the batch size or the crop size, or close other programs using the device."
PREVIEW_GAP_PX = 8
PREVIEW_KEY = "training_preview"  # layer metadata: epoch of a preview layer


def image_layers(viewer: napari.Viewer) -> list[tuple[str, Image]]:
    """Image layers that can be training data (not the training previews)."""
    return [
        (layer.name, layer)
        for layer in viewer.layers
        if isinstance(layer, Image) and PREVIEW_KEY not in layer.metadata
    ]


def format_eta(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def plain_layer_data(layer: Image, what: str) -> np.ndarray:
    """A layer's data as a numpy 2D image or Z-stack, or a :class:`DataError` saying why not."""
    if layer is None:
        raise DataError(f"No {what} layer chosen: open images (or File > Open Sample) first.")
    if layer.rgb or layer.multiscale or layer.ndim not in (2, 3):
        raise DataError(f"{what} layer {layer.name} must be a single-channel 2D image or Z-stack (ZYX).")
    return np.asarray(layer.data)


class TrainingWidget(Container):
    """Run settings shared by the training widgets, Start/Stop, progress, curves and previews.

    Subclasses pass their data and model widgets and implement :meth:`make_config`.
    """

    task = "train"
    action = "Fine-tuning"
    config_class: type[RunConfig] = TrainConfig
    plots_psnr = True
    help_texts: dict[str, str] = TRAINING

    def __init__(self, viewer: napari.Viewer, specific: list[Widget], mode: str = "process"):
        self.viewer, self.mode = viewer, mode
        defaults = self.config_class()
        self.epochs = SpinBox(label="epochs", min=1, max=100_000, value=min(defaults.epochs, 50))
        self.batch_size = SpinBox(label="batch size", min=1, max=1024, value=defaults.batch_size)
        self.crop_size = SpinBox(label="crop size (px)", min=32, max=4096, step=32, value=256)
        self.lr = FloatSpinBox(label="learning rate", min=1e-7, max=1.0, step=1e-5, value=defaults.lr)
        self.lr.native.setDecimals(7)
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.preview_every = SpinBox(label="preview every (epochs)", min=0, max=1000, value=1)
        self.workers = SpinBox(label="loader workers", min=0, max=32, value=2)
        self.device = ComboBox(label="device", choices=DEVICE_CHOICES)
        self.output = FileEdit(
            label="output folder", mode="d", value=Path.home() / "lightmycells" / self.task
        )
        self.resume = CheckBox(
            text="resume from output/last.pt", tooltip="Continue the stopped run in the output folder"
        )
        self.settings = Container(
            widgets=[
                *specific,
                self.epochs,
                self.batch_size,
                self.crop_size,
                self.lr,
                self.seed,
                self.preview_every,
                self.workers,
                self.device,
                self.output,
                self.resume,
            ]
        )
        self.settings.margins = (0, 0, 0, 0)
        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="", min=0, max=1, value=0)
        self.status = Label(label="", value="Idle")
        buttons = Container(widgets=[self.start_button, self.stop_button], layout="horizontal", labels=False)
        super().__init__(widgets=[self.settings, buttons, self.progress, self.status], labels=False)
        add_tooltips(self, self.help_texts)
        self.plot = TrainingPlot(with_psnr=self.plots_psnr, theme=viewer.theme)
        self.native.layout().addWidget(self.plot)
        viewer.events.theme.connect(self._on_theme)
        self.job: TrainingJob | None = None
        self._timer = QTimer(self.native)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.native.destroyed.connect(self._on_closed)

    # ---- subclass API ------------------------------------------------------------------------------
    def make_config(self) -> RunConfig:
        """The configuration of a new run (may write data); raise a user error when inputs are wrong."""
        raise NotImplementedError

    def on_trained(self, path: Path, config: RunConfig) -> None:
        """Called with the model to use once a run ends with a checkpoint."""
        show_info(f"{self.action}: model saved to {path}")

    # ---- run control -------------------------------------------------------------------------------
    def common_settings(self) -> dict:
        return {
            "output": str(self.output.value),
            "epochs": self.epochs.value,
            "batch_size": self.batch_size.value,
            "crop_size": self.crop_size.value,
            "lr": self.lr.value,
            "seed": self.seed.value,
            "preview_every": self.preview_every.value,
            "workers": self.workers.value,
            "device": self.device.value,
        }

    def config(self) -> RunConfig:
        """A new run's config, or with "resume" the stopped run's own (epochs, device, workers updated)."""
        if not self.resume.value:
            self._use_free_output_folder()
            return self.make_config()
        stored = config_from_checkpoint(str(Path(self.output.value) / LAST), self.config_class)
        return stored.replace(epochs=self.epochs.value, device=self.device.value, workers=self.workers.value)

    def _use_free_output_folder(self) -> None:
        """A new run never replaces an earlier one: a folder holding anything gives way to ``<folder>-2``..."""
        folder = Path(self.output.value)
        free = next_free_folder(folder, LAYERS_STUDY)
        if free != folder:
            self.output.value = free
            show_info(
                f"{folder} holds an earlier run; this run goes to {free} (tick resume to continue the earlier one)."
            )

    def start(self) -> None:
        """Start a run in the background (input errors become notifications)."""
        if self.job is not None:
            return
        try:
            config = self.config()
            self.job = TrainingJob(self.task, config, self.mode).start()
        except (LightMyCellsError, ValueError, OSError) as error:
            notify_error(error, self.action, TRAINING_MEMORY_HINT)
            return
        self.plot.clear()
        self.progress.value, self.progress.max = 0, 1
        self.status.value = f"Starting {self.action.lower()}…"
        self._set_running(True)
        self._timer.start()

    def stop(self) -> None:
        """Ask the run to stop; it saves ``last.pt`` first."""
        if self.job is not None:
            self.job.request_stop()
            self.stop_button.enabled = False
            self.status.value = "Stopping (saving last.pt)…"

    def _on_theme(self, event=None) -> None:
        self.plot.set_theme(self.viewer.theme)

    def _on_closed(self) -> None:
        """The dock was closed: stop the run, which saves ``last.pt`` so it can be resumed later, and let
        the job read the process's last messages itself so that the process exits."""
        self.viewer.events.theme.disconnect(self._on_theme)
        if self.job is not None:
            self.job.detach()

    def poll(self) -> None:
        """Handle the events that arrived since the last poll (runs in the GUI thread)."""
        if self.job is None:
            return
        for event in self.job.poll():
            self.handle(event)
        if self.job.finished:
            self._finish()

    def handle(self, event: ProgressEvent) -> None:
        if event.kind in ("start", "log"):
            self.status.value = event.message
        elif event.kind == "step":
            self._show_step(event)
        elif event.kind == "epoch":
            self.plot.add_epoch(event.epoch, event.metrics)
        elif event.kind == "preview":
            self.show_previews(event.images, event.epoch)

    def _show_step(self, event: ProgressEvent) -> None:
        if event.total:
            self.progress.max = event.total
        self.progress.value = min(event.step, self.progress.max)
        eta = f" · ~{format_eta(event.eta_s)} left" if event.eta_s is not None else ""
        loss = event.metrics.get("loss")
        loss_text = f" · loss {loss:.4g}" if loss is not None else ""
        self.status.value = (
            f"epoch {event.epoch}/{self.epochs.value} · step {event.step}/{event.total}{loss_text}{eta}"
        )

    def show_previews(self, images: dict[str, np.ndarray], epoch: int | None) -> None:
        """Show each preview image as a layer ``<Action> preview: <name>``, side by side to the right of the
        data layers (so they never cover them), updated in place."""
        x = self._preview_origin()
        for name, image in images.items():
            layer_name = f"{self.action} preview: {name}"
            if layer_name in self.viewer.layers:
                layer = self.viewer.layers[layer_name]
                layer.data = image
                layer.reset_contrast_limits()
            else:
                layer = self.viewer.add_image(
                    image, name=layer_name, colormap="gray", metadata={PREVIEW_KEY: epoch}
                )
            layer.translate = (0.0,) * (image.ndim - 1) + (x,)
            layer.metadata[PREVIEW_KEY] = epoch
            x += image.shape[-1] + PREVIEW_GAP_PX

    def _preview_origin(self) -> float:
        """World x where previews start: right of every non-preview layer, plus a gap."""
        data = [layer for layer in self.viewer.layers if PREVIEW_KEY not in layer.metadata]
        return (
            max((float(layer.extent.world[1][-1]) for layer in data), default=-PREVIEW_GAP_PX)
            + PREVIEW_GAP_PX
        )

    def _finish(self) -> None:
        job, self.job = self.job, None
        self._timer.stop()
        self._set_running(False)
        if job.error is not None:
            self.status.value = f"{self.action} failed"
            notify_error(job.error, self.action, TRAINING_MEMORY_HINT)
            return
        result = job.result
        self.status.value = f"{self.action} {result.status} at epoch {result.epoch} (step {result.step})"
        path = result.best_path or result.last_path
        if path is not None and Path(path).is_file():
            self.on_trained(Path(path), job.config)

    def _set_running(self, running: bool) -> None:
        self.settings.enabled = not running
        self.start_button.enabled, self.stop_button.enabled = not running, running
