"""The Predict widget: organelle predictions for an image layer, computed in a background thread.

The output layers appear at once and fill tile by tile (tiles in the field of view first; the finished tiles
and the progress are shown together at most every :data:`REFRESH_S`, uploading only the new tiles to the
GPU, see :mod:`._texture`); Cancel keeps the finished tiles. Progress shows in the widget's own bar, never
indeterminate: napari's activity dock animates an indicator while a task runs, and with software OpenGL each
of its frames redraws the window (~0.65 CPU cores, slowing tiles 2-5x on 2 cores). Image layers may be
numpy, lazy (dask, zarr: read tile by tile) or multiscale (the full-resolution level is predicted). Loaded
models are kept between clicks (:class:`..inference.cache.ModelCache`) until released or the dock closes.
Public-model downloads live in :mod:`.downloads`, the bioimage.io export in :mod:`.export`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from functools import partial, wraps
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
)
from napari.layers import Image
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QTimer
from superqt.utils import ensure_main_thread

from ..constants import CHALLENGE_PERCENTILES, MODALITIES, ORGANELLE_COLORMAPS
from ..devices import DEVICE_CHOICES, PRECISIONS, available_devices
from ..errors import DataError, ModelError, StopRequested
from ..events import ProgressEvent, StopToken
from ..hub import ModelEntry
from ..inference.cache import ModelCache
from ..inference.predictor import Predictor, resolve_plane
from ..inference.tiling import DEFAULT_OVERLAP
from ._help import PREDICT, add_tooltips
from ._tasks import notify_error, start_worker, unless_closed
from ._texture import upload_region
from .downloads import ModelDownloads, describe, public_models
from .export import ExportPanel

CHECKPOINT_FILE = "checkpoint file…"
PLANE_MODES = ("best focus", "plane index", "all planes")
CHECKPOINT_FILTER = "*.pt *.pth *.ckpt *.zip"  # checkpoints and bioimage.io packages
REFRESH_S = 0.25  # the output layers are redrawn at most this often while tiles arrive


@dataclass
class PredictRequest:
    """Everything the worker needs, captured in the main thread."""

    image: object  # numpy or lazy array, or a list of multiscale levels
    models: dict[str, Path]  # organelle -> checkpoint
    plane: str | int  # "best", "all" or a plane index
    device: str
    tile_size: int | None  # None: each model's training size
    overlap: float
    batch_size: int
    precision: str = "auto"
    out: dict[str, np.ndarray] = field(default_factory=dict)  # organelle -> array the layer shows
    focus: tuple[float, float] | None = None  # image point at the centre of the view
    cache: ModelCache | None = None


def run_prediction(request: PredictRequest, on_event, stop: StopToken) -> int | None:
    """Worker body: load the models and predict into ``request.out``; returns the stack plane predicted
    from (``None``: 2D image or all planes). Raises :class:`StopRequested` when stopped."""
    predictor = Predictor(
        request.models,
        request.device,
        request.tile_size,
        request.overlap,
        request.batch_size,
        precision=request.precision,
        cache=request.cache,
    )
    for message in predictor.warnings:  # shown as notifications by the worker
        warnings.warn(message, stacklevel=1)
    stop.check()
    plane = resolve_plane(request.image, request.plane)
    predictor.predict(request.image, plane, [on_event], stop, out=request.out, focus=request.focus)
    full_resolution = request.image[0] if isinstance(request.image, list) else request.image
    return plane if full_resolution.ndim == 3 and isinstance(plane, int) else None


def display_range(data: np.ndarray) -> tuple[float, float] | None:
    """Contrast limits at the challenge's normalisation percentiles (sampled every 4th pixel)."""
    low, high = np.percentile(data[..., ::4, ::4], CHALLENGE_PERCENTILES)
    return (float(low), float(high)) if high > low else None


def held_during_start(handler):
    """Hold the worker's calls arriving while :meth:`PredictWidget.start` still runs (napari processes Qt
    events while it adds layers); ``start`` makes them when its state is set up."""

    @wraps(handler)
    def hold(self, *args):
        if self._held is not None:
            self._held.append(partial(handler, self, *args))
        else:
            handler(self, *args)

    return hold


class ModelRow(Container):
    """One organelle: whether to predict it, and from a checkpoint file or a public model."""

    def __init__(self, organelle: str, public: list[ModelEntry]):
        self.organelle = organelle
        self.public = {entry.name: entry for entry in public}
        self.selected = CheckBox(text=organelle, value=organelle == "Nucleus")
        self.source = ComboBox(
            choices=[CHECKPOINT_FILE, *self.public],
            tooltip="\n\n".join([f"Model predicting {organelle}", *map(describe, public)]),
        )
        self.file = FileEdit(
            mode="r",
            filter=CHECKPOINT_FILTER,
            nullable=True,
            tooltip="Checkpoint (.pt/.pth, ours or BiaPy's) or bioimage.io package (.zip)",
        )
        super().__init__(widgets=[self.selected, self.source, self.file], layout="horizontal", labels=False)
        self.margins = (0, 0, 0, 0)
        self.source.changed.connect(
            lambda: setattr(self.file, "visible", self.source.value == CHECKPOINT_FILE)
        )


class PredictWidget(Container):
    """Predict fluorescence organelles from the selected transmitted-light image layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        self.viewer = napari_viewer
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.modality = ComboBox(label="modality", choices=MODALITIES)
        self.plane = ComboBox(
            label="Z plane", choices=PLANE_MODES, tooltip="Which plane(s) of a Z-stack to use"
        )
        self.plane_index = SpinBox(label="plane index", min=0, max=0, visible=False)
        self.rows = {organelle: ModelRow(organelle, models) for organelle, models in public_models().items()}
        self.device = ComboBox(label="device", choices=DEVICE_CHOICES)
        self.device_info = Label(label="", value=f"torch sees: {', '.join(available_devices())}")
        self.precision = ComboBox(
            label="precision",
            choices=PRECISIONS,
            tooltip="auto: bf16 on CUDA, fp32 elsewhere. bf16 is ~1.9x faster on CPUs with AVX512-BF16/AMX.",
        )
        self.tile_size = SpinBox(label="tile size (px)", min=0, max=8192, step=32, value=0)
        self.tile_size.native.setSpecialValueText("model's training size")  # shown for 0
        self.overlap = FloatSpinBox(label="tile overlap", min=0.0, max=0.5, step=0.025)
        self.overlap.native.setDecimals(3)  # 2 decimals (magicgui's) would turn 0.391 into 0.39
        self.overlap.value = DEFAULT_OVERLAP
        self.batch_size = SpinBox(label="tiles per batch", min=1, max=256, value=1)
        self.predict_button = PushButton(text="Predict")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.release_button = PushButton(
            text="Release models", tooltip="Free the memory of the models kept loaded between predictions"
        )
        self.status = Label(label="", value="")
        self.progress = ProgressBar(label="", value=0, max=1)
        self.downloads = ModelDownloads(self._show_status)
        self.exporter = ExportPanel(self._selected_checkpoints, self._show_status)
        self.export_path, self.export_button = self.exporter.path, self.exporter.button
        organelles = Container(label="organelles", widgets=list(self.rows.values()), labels=False)
        organelles.margins = (0, 0, 0, 0)
        buttons = Container(
            widgets=[self.predict_button, self.cancel_button, self.release_button],
            layout="horizontal",
            labels=False,
        )
        super().__init__(
            widgets=[
                self.image,
                self.modality,
                self.plane,
                self.plane_index,
                organelles,
                self.device,
                self.device_info,
                self.precision,
                self.tile_size,
                self.overlap,
                self.batch_size,
                buttons,
                self.status,
                self.progress,
                self.exporter,
            ]
        )
        add_tooltips(self, PREDICT)
        self.worker = None
        self._stop: StopToken | None = None
        self._source: Image | None = None
        self._layers: dict[str, Image] = {}  # organelle -> output layer being filled
        self._blank: set[str] = set()  # organelles whose layer has no finished tile yet
        self._stale: dict[str, list] = {}  # organelle -> regions of its layer finished but not yet drawn
        self._shown: tuple | None = None  # (progress text, step, total) not yet shown
        self._drawn = 0.0
        self._redraw_timer = QTimer()
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.timeout.connect(self._redraw)
        self._held: list | None = None  # worker calls held while start() runs
        self._closed = False
        self.models = ModelCache()

        self.image.changed.connect(self._on_image_changed)
        self.plane.changed.connect(lambda mode: setattr(self.plane_index, "visible", mode == "plane index"))
        for row in self.rows.values():
            row.source.changed.connect(partial(self._on_source_changed, row))
        self.predict_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.release_button.clicked.connect(self.release_models)
        self.native.destroyed.connect(self._on_closed)
        self._on_image_changed(self.image.value)

    def _on_closed(self) -> None:
        """The dock was closed: stop a running prediction and ignore what its worker still sends."""
        self._closed = True
        self._redraw_timer.stop()
        self.downloads.close()
        if self._stop is not None:
            self._stop.request()
        self.models.clear()

    def release_models(self) -> None:
        """Free the models kept loaded (a running prediction keeps its own until it ends)."""
        count = len(self.models)
        self.models.clear()
        self.status.value = f"Released {count} model(s)"

    def _image_layers(self, _=None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _on_image_changed(self, layer: Image | None) -> None:
        is_stack = layer is not None and layer.ndim == 3 and not layer.rgb
        self.plane.visible = is_stack
        self.plane_index.visible = is_stack and self.plane.value == "plane index"
        if is_stack:
            self.plane_index.max = layer.data.shape[0] - 1
        modality = layer.metadata.get("modality") if layer is not None else None
        if modality in MODALITIES:
            self.modality.value = modality

    def _show_status(self, message: str) -> None:
        self.status.value = message

    def _on_source_changed(self, row: ModelRow, name: str) -> None:
        if name in row.public:
            self.downloads.start(row.public[name])

    def _selected_checkpoints(self) -> dict[str, Path]:
        """Organelle -> model file of the ticked rows (a :class:`ModelError` for a row without one)."""
        return {row.organelle: self._checkpoint(row) for row in self.rows.values() if row.selected.value}

    def start(self) -> None:
        """Check the inputs and start predicting in a worker thread (errors become notifications)."""
        if self.worker is not None:
            return
        try:
            request = self._request()
        except (DataError, ModelError) as error:
            notify_error(error, "Prediction")
            return
        self._source = self.image.value
        self._stop = StopToken()
        self._held = []
        try:
            self._start_worker(request)
        finally:
            held, self._held = self._held, None
            for call in held:
                call()

    def _start_worker(self, request: PredictRequest) -> None:
        """Start the worker first, then show the progress and the output layers while it computes."""
        self.worker = start_worker(
            run_prediction,
            request,
            self._on_event,
            self._stop,
            returned=self._on_result,
            errored=self._on_error,
            finished=self._on_finished,
        )
        # The first tile is on its way while the viewer adds the layers (slow).
        self.progress.max, self.progress.value = 1, 0
        self.progress.native.setFormat("%p%")
        self.status.value = "Loading models…"
        self.predict_button.enabled, self.cancel_button.enabled = False, True
        self._layers = {
            organelle: self._output_layer(organelle, out) for organelle, out in request.out.items()
        }
        self._blank, self._stale, self._shown, self._drawn = set(self._layers), {}, None, 0.0

    def cancel(self) -> None:
        """Ask the running prediction to stop after its current batch of tiles."""
        if self._stop is not None:
            self._stop.request()
            self.cancel_button.enabled = False
            self.status.value = "Cancelling…"

    def _request(self) -> PredictRequest:
        layer = self.image.value
        if layer is None:
            raise DataError("No image layer: open a transmitted-light image (or File > Open Sample) first.")
        if layer.rgb:
            raise DataError(f"{layer.name} is an RGB image; convert it to a single-channel grayscale image.")
        if layer.ndim not in (2, 3):
            raise DataError(
                f"{layer.name} has {layer.ndim} dimensions; expected a 2D image (YX) or a Z-stack (ZYX). "
                "Split channels or time points into separate layers."
            )
        rows = [row for row in self.rows.values() if row.selected.value]
        if not rows:
            raise ModelError("No organelle selected: tick at least one organelle to predict.")
        plane = {"best focus": "best", "all planes": "all"}.get(self.plane.value, self.plane_index.value)
        image = list(layer.data) if layer.multiscale else layer.data
        shape = tuple(layer.level_shapes[0] if layer.multiscale else layer.data.shape)
        shape = shape if plane == "all" else shape[-2:]
        models = self._selected_checkpoints()
        return PredictRequest(
            image=image,
            models=models,
            plane=plane,
            device=self.device.value,
            tile_size=self.tile_size.value or None,
            overlap=self.overlap.value,
            batch_size=self.batch_size.value,
            precision=self.precision.value,
            out={organelle: np.zeros(shape, np.float32) for organelle in models},
            focus=self._view_centre(layer),
            cache=self.models,
        )

    def _view_centre(self, layer: Image) -> tuple[float, float] | None:
        """The (y, x) pixel of ``layer`` at the centre of the view (its tiles are predicted first)."""
        if self.viewer.dims.ndisplay != 2:
            return None
        world = list(self.viewer.dims.point)
        camera = (
            self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera
        )  # napari < 0.9
        world[-2:] = camera.center[-2:]
        point = layer.world_to_data(world)
        return float(point[-2]), float(point[-1])

    def _checkpoint(self, row: ModelRow) -> Path:
        name = row.source.value
        if name == CHECKPOINT_FILE:
            if row.file.value is None or not Path(row.file.value).is_file():
                raise ModelError(
                    f"No {row.organelle} model chosen: pick a checkpoint file or a public model."
                )
            return Path(row.file.value)
        path = self.downloads.path(name, row.organelle)
        trained_on = row.public[name].modality
        if trained_on and self.modality.value not in trained_on:
            show_warning(
                f"{name} was trained on {'/'.join(trained_on)} images, not {self.modality.value}: "
                "expect poor predictions."
            )
        return path

    @ensure_main_thread
    @unless_closed
    @held_during_start
    def _on_event(self, event: ProgressEvent) -> None:
        """Progress from the worker thread, delivered in the main thread. The tile count and time left show
        in the progress bar's text, with the finished tiles, at most every :data:`REFRESH_S`: with software
        OpenGL each repaint of the window costs tens of milliseconds, and a status label whose text changes
        size would relayout (and repaint) the whole window at each tile."""
        if event.kind == "start":
            self.status.value = event.message
            self.progress.max, self.progress.value = max(event.total or 1, 1), 0
            return
        if event.kind != "step":
            return
        eta = f", ~{event.eta_s:.0f} s left" if event.eta_s is not None else ""
        self._shown = (f"{event.message}{eta}", event.step, event.total)
        if event.output in self._layers:
            self._on_tiles(event.output, event.region)
        else:
            self._schedule_redraw()

    def _on_tiles(self, organelle: str, region: tuple) -> None:
        """Show finished tiles: at once for a layer's first ones (with contrast limits from them), else
        with the next throttled redraw."""
        self._stale.setdefault(organelle, []).append(region)
        if organelle in self._blank:
            self._blank.discard(organelle)
            limits = display_range(np.asarray(self._layers[organelle].data[region]))
            if limits is not None:
                self._layers[organelle].contrast_limits = limits
            self._redraw()
        else:
            self._schedule_redraw()

    def _schedule_redraw(self) -> None:
        if not self._redraw_timer.isActive():
            wait = REFRESH_S - (time.perf_counter() - self._drawn)
            self._redraw_timer.start(max(0, round(1000 * wait)))

    def _redraw(self, full: bool = False) -> None:
        """Show the tiles finished since the last redraw (uploading only them, unless ``full``: the whole
        layers are refreshed, thumbnails included), then the progress. In this order the progress bar's
        immediate repaint also paints the canvas: one repaint of the window instead of two."""
        self._redraw_timer.stop()
        for organelle, layer in self._layers.items():
            if layer not in self.viewer.layers:
                continue
            regions = self._stale.get(organelle, [])
            if full or not all(upload_region(self.viewer, layer, region) for region in regions):
                layer.refresh()
        self._stale.clear()
        if self._shown is not None:
            message, step, total = self._shown
            self.progress.native.setFormat(message.replace("%", "%%"))
            if total:
                self.progress.max = total
            self.progress.value = step
            self._shown = None
        self._drawn = time.perf_counter()

    @unless_closed
    @held_during_start
    def _on_result(self, plane: int | None) -> None:
        for layer in self._layers.values():
            layer.metadata["plane"] = plane
            limits = display_range(layer.data)
            if limits is not None:
                layer.contrast_limits = limits
        self._redraw(full=True)
        where = f" (plane {plane})" if plane is not None else ""
        self.status.value = f"Predicted {', '.join(self._layers)}{where}"

    def _output_layer(self, organelle: str, data: np.ndarray) -> Image:
        """The ``<input> <Organelle>`` layer showing ``data``, aligned with the input layer: the layer of an
        earlier prediction of the same shape is reused (much faster than a new layer), another replaced."""
        source = self._source
        name = f"{source.name} {organelle}"
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if isinstance(layer, Image) and layer.data.shape == data.shape and not layer.multiscale:
                layer.data = data
                layer.metadata.update(organelle=organelle, modality=self.modality.value, plane=None)
                return layer
            self.viewer.layers.remove(name)
        return self.viewer.add_image(
            data,
            name=name,
            scale=source.scale[-data.ndim :],
            translate=source.translate[-data.ndim :],
            colormap=ORGANELLE_COLORMAPS[organelle],
            contrast_limits=(0.0, 1.0),
            blending="additive",
            metadata={
                "organelle": organelle,
                "modality": self.modality.value,
                "source": source.name,
                "plane": None,
            },
        )

    @unless_closed
    @held_during_start
    def _on_error(self, error: Exception) -> None:
        for organelle in self._blank:  # no empty layers left behind
            if self._layers[organelle] in self.viewer.layers:
                self.viewer.layers.remove(self._layers[organelle])
        if isinstance(error, StopRequested):
            self._redraw(full=True)
            self.status.value = "Cancelled (finished tiles kept)"
            show_info("Prediction cancelled; the finished tiles are kept.")
            return
        self.status.value = "Prediction failed"
        notify_error(error, "Prediction")

    @unless_closed
    @held_during_start
    def _on_finished(self) -> None:
        self.worker = self._stop = None
        self.predict_button.enabled, self.cancel_button.enabled = True, False
