"""Predict fluorescence organelles from a transmitted-light image with one model per organelle.

A :class:`Predictor` holds loaded models and the runtime settings (device, tiles, batch size); models
themselves stay plain ``nn.Module`` objects (segment-anything style separation).

Intensities: each 2D input plane is normalised on its own with the model's normalisation (z-score by
default, as in the paper), the model runs on tiles, and its output is **denormalised with the input
plane's statistics** (``pred * std(input) + mean(input)``), as BiaPy does for this workflow. The
predictions are therefore in the input's intensity units, not in fluorescence units; the challenge
metrics percentile-normalise predictions, so this choice does not change scores.

Images may be lazy (zarr, dask) or multiscale (a list of levels, full resolution first): tiles are then
read one at a time, statistics come from a sample (:mod:`.arrays`), and outputs may be written into
arrays the caller provides (an OME-Zarr on disk, or the array a napari layer already shows).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..constants import canonical_organelle
from ..data.focus import best_focus_index
from ..data.normalize import NormStats, compute_stats, denormalize
from ..devices import autocast_dtype, is_out_of_memory, select_device
from ..errors import DataError, LightMyCellsError, ModelError, StopRequested
from ..events import Callback, ProgressEvent, Reporter, StopToken
from .arrays import coarsest_sample, is_lazy, plane_of
from .cache import ModelCache
from .tiling import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE_SIZE,
    MAX_TILE_GROWTH,
    TileGrid,
    overlap_pixels,
    plan_tiles,
    predict_grid,
)

if TYPE_CHECKING:
    from .outputs import PlannedInput

logger = logging.getLogger(__name__)

PlaneChoice = int | str


@dataclass
class FileResult:
    """Outcome of one input of :meth:`Predictor.predict_files`: ``status`` is ``"ok"``, ``"error"`` or
    ``"skipped"``; ``outputs`` lists the files written."""

    file: Path
    status: str
    message: str = ""
    outputs: list[Path] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.status:<8} {self.file}  {self.message}"


class _JobProgress:
    """Re-emits the tile steps of one :meth:`Predictor.predict` call as steps of a whole batch job."""

    def __init__(self, reporter: Reporter, base: int, expected: int):
        self.reporter, self.base, self.expected = reporter, base, expected

    def __call__(self, event: ProgressEvent) -> None:
        if event.total is not None and event.total != self.expected:  # a tile size other than planned
            self.reporter.total += event.total - self.expected
            self.expected = event.total
        if event.kind == "step":
            self.reporter.emit("step", self.base + event.step, message=event.message)


@dataclass
class _LoadedModel:
    model: nn.Module
    normalization: str
    token_size: int
    crop_size: int | None  # side of the model's training crops, when known


class Predictor:
    """Runs organelle models on images of any size, tile by tile.

    ``models`` maps organelle names to ``nn.Module`` objects (with a ``token_size`` attribute) or
    checkpoint paths. ``overlap`` is a fraction of ``tile_size`` (0 to 0.5). ``tile_size`` defaults to each
    model's training crop size (``crop_size``, stored in checkpoints) and is rounded down to a multiple of
    each model's token size; tiles grow up to ``tile_growth`` times that when it
    means fewer computed pixels (:func:`.tiling.plan_tiles`; 1 keeps the size). Checkpoints come from
    ``cache`` when given (a :class:`.cache.ModelCache` shared between predictions). ``normalization`` overrides the models'
    (checkpoints carry theirs; plain modules default to ``"zscore"``). ``precision`` is ``"auto"`` (bf16 on
    CUDA, fp32 elsewhere), ``"fp32"``, ``"bf16"`` (also fast on recent CPUs) or ``"fp16"`` (CUDA). On out-of-memory errors the batch
    size, then the tile size, is halved and the image retried; the reduced settings are kept.
    """

    def __init__(
        self,
        models: Mapping[str, nn.Module | str | os.PathLike],
        device: str | torch.device = "auto",
        tile_size: int | None = None,
        overlap: float = DEFAULT_OVERLAP,
        batch_size: int = 1,
        normalization: str | None = None,
        precision: str = "auto",
        tile_growth: float = MAX_TILE_GROWTH,
        cache: ModelCache | None = None,
    ):
        if not models:
            raise ModelError("No model given: pass at least one organelle model or checkpoint.")
        validate_tiling(tile_size, overlap, batch_size)
        self.warnings: list[str] = []  # model mismatches worth telling the user (also logged)
        self.device = select_device(device)
        if self.device.type == "cuda":  # tiles share a few shapes: autotuned convolutions pay off
            torch.backends.cudnn.benchmark = True
        self.tile_size = tile_size
        self.overlap = overlap
        self.batch_size = batch_size
        self.tile_growth = tile_growth
        self.precision = precision
        self.cache = cache
        self.autocast_dtype = autocast_dtype(self.device, precision)
        self.models: dict[str, _LoadedModel] = {
            _organelle(name): self._load(_organelle(name), model, normalization)
            for name, model in models.items()
        }

    @property
    def organelles(self) -> list[str]:
        return list(self.models)

    def predict(
        self,
        image,
        plane: PlaneChoice = "best",
        callbacks: Iterable[Callback] | None = None,
        stop: StopToken | None = None,
        out: Mapping[str, object] | None = None,
        focus: tuple[float, float] | None = None,
    ) -> dict[str, np.ndarray]:
        """Denormalised float32 prediction of every organelle for a ``YX`` image or ``ZYX`` stack.

        ``image`` is a numpy array, a lazy array (zarr, dask) or a multiscale list of them (the first level
        is predicted). For stacks, ``plane`` is ``"best"`` (least blurry plane, 2D output), a plane index
        (2D output) or ``"all"`` (``ZYX`` output). ``out`` maps organelles to zeroed float32 arrays of the
        output shape to fill (default: new numpy arrays); tiles nearest the point ``focus`` (y, x) run
        first. Emits ``"predict"`` events: one ``"step"`` per tile batch, whose ``output`` and ``region``
        say which part of which output is done. Checks ``stop`` between batches; the finished tiles stay
        in ``out``.
        """
        image, samples = validate_levels(image)
        indices = select_planes(image, plane, samples)
        stacked = image.ndim == 3 and plane == "all"
        shape = image.shape[-2:]
        grids = {organelle: self._grid(shape, loaded) for organelle, loaded in self.models.items()}
        out = dict(out or {})
        for organelle in self.models:
            if organelle not in out:
                out[organelle] = np.zeros((len(indices), *shape) if stacked else shape, dtype=np.float32)
        reporter = Reporter("predict", callbacks, total=len(indices) * sum(map(len, grids.values())))
        reporter.emit("start", 0, message=f"Predicting {', '.join(self.models)} on {len(indices)} plane(s)")
        done = 0
        for z, index in enumerate(indices):
            plane_image = image if index is None else plane_of(image, index)
            plane_sample = samples if index is None else samples[index]
            stats: dict[str, NormStats] = {}
            for organelle, loaded in self.models.items():
                if loaded.normalization not in stats:
                    stats[loaded.normalization] = compute_stats(plane_sample, loaded.normalization)
                target = plane_of(out[organelle], z) if stacked else out[organelle]

                def on_batch(tiles_done, tiles_total, regions, base=done, organelle=organelle, z=z):
                    if tiles_total != len(grids[organelle]):  # tile size reduced after an out-of-memory error
                        reporter.total += tiles_total - len(grids[organelle])
                        grids[organelle] = self._grid(shape, self.models[organelle])
                    reporter.emit(
                        "step",
                        base + tiles_done,
                        message=f"{organelle}: tile {tiles_done}/{tiles_total}",
                        output=organelle,
                        region=_bounding_region(regions, z if stacked else None),
                    )
                    if stop is not None:
                        stop.check()

                self._run(loaded, plane_image, stats[loaded.normalization], target, on_batch, focus)
                done += len(grids[organelle])
        reporter.emit("done", done, message="Prediction finished")
        return out

    def predict_files(
        self,
        inputs: Iterable[str | os.PathLike],
        output_dir: str | os.PathLike,
        plane: PlaneChoice = "best",
        callbacks: Iterable[Callback] | None = None,
        stop: StopToken | None = None,
        overwrite: bool = False,
        skip_existing: bool = False,
        shard: tuple[int, int] = (0, 1),
        after_plan: Callable[[], None] | None = None,
    ) -> list[FileResult]:
        """Predict every input file (folders: their TIFF files) into ``<stem>_<Organelle>.ome.tiff``.

        Outputs are float32 OME-TIFFs carrying the input's pixel size; images too big for memory are read
        lazily and predicted into ``.ome.zarr`` folders (:mod:`..data.lazy`). Before anything is computed
        the outputs are checked (:func:`.outputs.plan_outputs`): existing files are replaced only with
        ``overwrite`` (kept, and their inputs skipped, with ``skip_existing``), organelle images among the
        inputs never. ``shard=(rank, count)`` predicts only every ``count``-th input from ``rank`` (one
        process of a ``torchrun`` job; skipped inputs are reported by rank 0), after ``after_plan()`` (a
        barrier: no process writes while another still checks the outputs). Nothing is skipped silently:
        every input (and every non-TIFF file found in a folder) gets a :class:`FileResult`; a file that
        fails gets an ``"error"`` entry and the others are still processed. Progress is one job: ``step``
        events count the tiles of all inputs, and each input's result is a ``log`` event with its ``path``.
        """
        from .outputs import plan_outputs

        callbacks = list(callbacks or [])
        rank, count = shard
        plan = plan_outputs(inputs, output_dir, self.organelles, overwrite, skip_existing)
        todo = [item for item in plan if not item.skip_reason]
        mine = {id(item) for item in todo[rank::count]}
        if after_plan is not None:
            after_plan()
        tiles = {id(item): self._count_file_tiles(item, plane) for item in todo if id(item) in mine}
        reporter = Reporter("predict", callbacks, total=sum(tiles.values()))
        reporter.emit(
            "start", 0, message=f"Predicting {', '.join(self.organelles)} for {len(tiles)} input(s)"
        )
        results, done = [], 0
        for item in plan:
            path = item.path
            if item.skip_reason:
                if rank == 0:
                    results.append(FileResult(path, "skipped", item.skip_reason))
                    reporter.emit("log", done, message=results[-1].line(), path=str(path))
                continue
            if id(item) not in mine:
                continue
            progress = _JobProgress(reporter, done, tiles[id(item)])
            try:
                outputs = self._predict_file(item.path, item.outputs, plane, [progress], stop)
            except StopRequested:
                raise
            except LightMyCellsError as exc:
                results.append(FileResult(path, "error", str(exc)))
            except Exception as exc:
                logger.exception("Unexpected error while predicting %s", path)
                results.append(FileResult(path, "error", f"{type(exc).__name__}: {exc}"))
            else:
                results.append(FileResult(path, "ok", f"wrote {len(outputs)} file(s)", outputs))
            done += progress.expected
            reporter.emit("log", done, message=results[-1].line(), path=str(path))
        reporter.emit("done", done)
        return results

    def _count_file_tiles(self, item: PlannedInput, plane: PlaneChoice) -> int:
        """Tiles :meth:`predict_files` will run for one input (0 if its header cannot be read)."""
        from ..data.io import read_shape

        try:
            shape = read_shape(item.path)
        except LightMyCellsError:
            return 0
        planes = shape[0] if plane == "all" and len(shape) == 3 else 1
        return planes * sum(len(self._grid(shape[-2:], self.models[organelle])) for organelle in item.outputs)

    def _predict_file(self, path: Path, outputs: dict[str, Path], plane, callbacks, stop) -> list[Path]:
        """Predict the organelles of ``outputs`` for one file and write them (OME-TIFF, or OME-Zarr)."""
        from ..data.io import write_prediction
        from ..data.lazy import ome_zarr_output, open_image

        image = open_image(path)
        predictor = self if list(outputs) == self.organelles else self._only(outputs)
        if not any(str(target).endswith(".zarr") for target in outputs.values()):
            predictions = predictor.predict(image.data, plane=plane, callbacks=callbacks, stop=stop)
            return [
                write_prediction(outputs[organelle], data, image, organelle)
                for organelle, data in predictions.items()
            ]
        shape = tuple(image.data.shape) if plane == "all" else tuple(image.data.shape[-2:])
        with contextlib.ExitStack() as stack:
            out = {
                organelle: stack.enter_context(ome_zarr_output(target, shape, image, organelle))
                for organelle, target in outputs.items()
            }
            predictor.predict(image.data, plane=plane, callbacks=callbacks, stop=stop, out=out)
        return list(outputs.values())

    def _only(self, organelles: Iterable[str]) -> Predictor:
        """This predictor restricted to some of its organelles (models shared)."""
        subset = copy.copy(self)
        subset.models = {organelle: self.models[organelle] for organelle in organelles}
        return subset

    def _load(
        self, organelle: str, model: nn.Module | str | os.PathLike, normalization: str | None
    ) -> _LoadedModel:
        card_normalization = None
        if not isinstance(model, nn.Module):
            from ..loading import load_model

            if self.cache is not None:
                model, card = self.cache.load(model, self.device, self.precision)
            else:
                model, card = load_model(model, self.device)
            if card.kind != "unetr":
                raise ModelError(
                    f"{card.path} holds a {card.kind} model (pretraining), not an organelle predictor; "
                    "fine-tune it first or pick a UNETR checkpoint."
                )
            if card.organelle and card.organelle != organelle:
                self.warnings.append(
                    f"{Path(card.path).name} was trained for {card.organelle} but is used for {organelle}."
                )
                logger.warning("warning: %s", self.warnings[-1])
            card_normalization = card.normalization
        token_size = getattr(model, "token_size", None)
        if not isinstance(token_size, int) or token_size < 1:
            raise ModelError(
                f"{type(model).__name__} has no integer `token_size` attribute; it cannot be tiled."
            )
        model = model.to(self.device).eval()
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        crop_size = getattr(model, "crop_size", None)
        return _LoadedModel(model, normalization or card_normalization or "zscore", token_size, crop_size)

    def _tile_size(self, loaded: _LoadedModel) -> int:
        """The requested tile, else the model's training crop (never smaller by default), else 1024 px."""
        tile = self.tile_size or loaded.crop_size or DEFAULT_TILE_SIZE
        return max(loaded.token_size, tile // loaded.token_size * loaded.token_size)

    def tile_grid(self, shape: tuple[int, int], organelle: str) -> TileGrid:
        """The tiles :meth:`predict` runs for a plane of ``shape`` with the model of ``organelle``."""
        return self._grid(tuple(shape), self.models[_organelle(organelle)])

    def _grid(self, shape: tuple[int, int], loaded: _LoadedModel) -> TileGrid:
        return plan_tiles(shape, self._tile_size(loaded), loaded.token_size, self.overlap, self.tile_growth)

    def _run(self, loaded: _LoadedModel, image, stats: NormStats, out, on_batch, focus) -> None:
        """Tiled prediction of one 2D plane into ``out``, shrinking batch then tiles on out-of-memory."""
        offset, scale = np.float32(stats.offset), np.float32(stats.scale)

        def predict_batch(tiles: np.ndarray) -> np.ndarray:
            return denormalize(self._forward(loaded.model, (tiles - offset) / scale), stats)

        while True:
            grid = self._grid(tuple(image.shape), loaded)
            try:
                predict_grid(image, predict_batch, grid, self.batch_size, on_batch, out=out, focus=focus)
                return
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            out[...] = 0
            self._free_memory()
            self._shrink(loaded, grid.tile, message)

    def _shrink(self, loaded: _LoadedModel, tile_size: int, message: str) -> None:
        if self.batch_size > 1:
            self.batch_size //= 2
            logger.warning("Out of memory (%s); retrying with batch size %d", message, self.batch_size)
        elif tile_size > loaded.token_size:
            self.tile_size = max(loaded.token_size, tile_size // 2 // loaded.token_size * loaded.token_size)
            logger.warning("Out of memory (%s); retrying with %d px tiles", message, self.tile_size)
        else:
            raise ModelError(
                f"Out of memory on {self.device} even with one {tile_size}x{tile_size} tile per batch ({message}). "
                "Close other programs using the device, or run on the CPU (device='cpu' / --device cpu)."
            )

    @torch.inference_mode()
    def _forward(self, model: nn.Module, tiles: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device)
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        dtype = self.autocast_dtype
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            output = model(batch)
        return output.float().cpu().numpy()

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def validate_tiling(tile_size: int | None, overlap: float, batch_size: int) -> None:
    """Check tile settings (before any model or image is loaded); ``tile_size`` None: the models' own."""
    if (tile_size is not None and tile_size < 1) or batch_size < 1:
        raise ModelError(f"tile_size and batch_size must be positive, got {tile_size} and {batch_size}.")
    overlap_pixels(tile_size or DEFAULT_TILE_SIZE, overlap)


def validate_image(image):
    """Check that ``image`` is a non-empty 2D or 3D numeric array (numpy: also finite and not constant).

    Lazy arrays are returned as they are (their pixels are checked on a sample, by the statistics);
    anything else becomes a numpy array.
    """
    image = image if is_lazy(image) else np.asarray(image)
    if image.ndim not in (2, 3):
        raise DataError(
            f"Expected a 2D image (YX) or a Z-stack (ZYX), got {image.ndim} dimensions {tuple(image.shape)}. "
            "Split channels or time points into separate images."
        )
    if math.prod(image.shape) == 0:
        raise DataError(f"The image is empty (shape {tuple(image.shape)}).")
    if np.dtype(image.dtype).kind not in "uif":
        raise DataError(f"Unsupported pixel type {image.dtype}: use an integer or floating-point image.")
    if is_lazy(image):
        return image
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise DataError("The image contains NaN or infinite values; replace them before predicting.")
    if image.min() == image.max():
        raise DataError("The image is constant (no intensity variation); there is nothing to predict from.")
    return image


def validate_levels(image) -> tuple[object, np.ndarray]:
    """``(full-resolution image, sample)`` of a numpy, lazy or multiscale image, checked by
    :func:`validate_image`; the sample (all of a numpy image) gives statistics and focus."""
    levels = image if isinstance(image, (list, tuple)) else [image]
    image = validate_image(levels[0])
    return image, coarsest_sample(levels) if len(levels) > 1 or is_lazy(image) else image


def resolve_plane(image, plane: PlaneChoice) -> PlaneChoice:
    """``plane`` with ``"best"`` replaced by the index of the least blurry plane of a stack."""
    if plane != "best":
        return plane
    image, samples = validate_levels(image)
    return plane if image.ndim == 2 else select_planes(image, plane, samples)[0]


def select_planes(image, plane: PlaneChoice, samples=None) -> list[int | None]:
    """Indices of the planes to predict from (``[None]``: a 2D image): the best, indexed or all planes.

    ``samples`` is the image or a smaller sample of it, for the focus measure."""
    if image.ndim == 2:
        return [None]
    if plane == "all":
        return list(range(image.shape[0]))
    if plane == "best":
        index = best_focus_index(np.asarray(image if samples is None else samples))
        logger.debug("Best-focus plane: %d of %d", index, image.shape[0])
        return [index]
    if isinstance(plane, (int, np.integer)) and not isinstance(plane, bool):
        if not -image.shape[0] <= plane < image.shape[0]:
            raise DataError(
                f"Plane {plane} does not exist: the stack has {image.shape[0]} planes (0-{image.shape[0] - 1})."
            )
        return [int(plane) % image.shape[0]]
    raise DataError(f"Unknown plane {plane!r}: use 'best', 'all' or a plane index.")


def _bounding_region(regions: list[tuple[int, int, int, int]], z: int | None) -> tuple:
    """Index of the output box holding the ``(y0, y1, x0, x1)`` regions (``z``: a plane of a stacked output)."""
    y0, x0 = min(r[0] for r in regions), min(r[2] for r in regions)
    y1, x1 = max(r[1] for r in regions), max(r[3] for r in regions)
    box = (slice(y0, y1), slice(x0, x1))
    return box if z is None else (z, *box)


def _organelle(name: str) -> str:
    try:
        return canonical_organelle(name)
    except ValueError as exc:
        raise ModelError(str(exc)) from exc
