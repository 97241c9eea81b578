"""Predict fluorescence organelles from a transmitted-light image with one model per organelle.

A :class:`Predictor` holds loaded models and the runtime settings (device, tiles, batch size); models
themselves stay plain ``nn.Module`` objects (segment-anything style separation).

Intensities: each 2D input plane is normalised on its own with the model's normalisation (z-score by
default, as in the paper), the model runs on tiles, and its output is **denormalised with the input
plane's statistics** (``pred * std(input) + mean(input)``), as BiaPy does for this workflow. The
predictions are therefore in the input's intensity units, not in fluorescence units; the challenge
metrics percentile-normalise predictions, so this choice does not change scores.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..constants import canonical_organelle
from ..data.focus import best_focus_index
from ..data.normalize import NormStats, denormalize, normalize
from ..devices import autocast_dtype, is_out_of_memory, select_device
from ..errors import DataError, LightMyCellsError, ModelError, StopRequested
from ..events import Callback, Reporter, StopToken
from .tiling import count_tiles, overlap_pixels, predict_tiled

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


@dataclass
class _LoadedModel:
    model: nn.Module
    normalization: str
    token_size: int


class Predictor:
    """Runs organelle models on images of any size, tile by tile.

    ``models`` maps organelle names to ``nn.Module`` objects (with a ``token_size`` attribute) or
    checkpoint paths. ``overlap`` is a fraction of ``tile_size`` (0 to 0.5). ``tile_size`` is rounded
    down to a multiple of each model's token size. ``normalization`` overrides the models'
    (checkpoints carry theirs; plain modules default to ``"zscore"``). ``precision`` is ``"auto"`` (bf16 on
    CUDA, fp32 elsewhere), ``"fp32"``, ``"bf16"`` (also fast on recent CPUs) or ``"fp16"`` (CUDA). On out-of-memory errors the batch
    size, then the tile size, is halved and the image retried; the reduced settings are kept.
    """

    def __init__(
        self,
        models: Mapping[str, nn.Module | str | os.PathLike],
        device: str | torch.device = "auto",
        tile_size: int = 1024,
        overlap: float = 0.125,
        batch_size: int = 1,
        normalization: str | None = None,
        precision: str = "auto",
    ):
        if not models:
            raise ModelError("No model given: pass at least one organelle model or checkpoint.")
        validate_tiling(tile_size, overlap, batch_size)
        self.warnings: list[str] = []  # model mismatches worth telling the user (also logged)
        self.device = select_device(device)
        self.tile_size = tile_size
        self.overlap = overlap
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype(self.device, precision)
        self.models: dict[str, _LoadedModel] = {
            _organelle(name): self._load(_organelle(name), model, normalization) for name, model in models.items()
        }

    @property
    def organelles(self) -> list[str]:
        return list(self.models)

    def predict(
        self,
        image: np.ndarray,
        plane: PlaneChoice = "best",
        callbacks: Iterable[Callback] | None = None,
        stop: StopToken | None = None,
    ) -> dict[str, np.ndarray]:
        """Denormalised float32 prediction of every organelle for a ``YX`` image or ``ZYX`` stack.

        For stacks, ``plane`` is ``"best"`` (least blurry plane, 2D output), a plane index (2D output)
        or ``"all"`` (``ZYX`` output). Emits ``"predict"`` events (one ``"step"`` per tile batch) and
        checks ``stop`` between batches.
        """
        image = validate_image(image)
        planes = select_planes(image, plane)
        tile_counts = {
            (z, organelle): self._count_tiles(planes[z], loaded)
            for z in range(len(planes)) for organelle, loaded in self.models.items()
        }
        reporter = Reporter("predict", callbacks, total=sum(tile_counts.values()))
        reporter.emit("start", 0, message=f"Predicting {', '.join(self.models)} on {len(planes)} plane(s)")
        results: dict[str, list[np.ndarray]] = {organelle: [] for organelle in self.models}
        done = 0
        for z, plane_image in enumerate(planes):
            normalized: dict[str, tuple[np.ndarray, NormStats]] = {}
            for organelle, loaded in self.models.items():
                if loaded.normalization not in normalized:
                    normalized[loaded.normalization] = normalize(plane_image, loaded.normalization)
                plane_input, stats = normalized[loaded.normalization]
                job = (z, organelle)

                def on_batch(tiles_done: int, tiles_total: int, base: int = done, job: tuple = job) -> None:
                    if tiles_total != tile_counts[job]:  # tile size reduced after an out-of-memory error
                        reporter.total += tiles_total - tile_counts[job]
                        tile_counts[job] = tiles_total
                    reporter.emit("step", base + tiles_done, message=f"{job[1]}: tile {tiles_done}/{tiles_total}")
                    if stop is not None:
                        stop.check()

                output = self._run(loaded, plane_input, on_batch)
                results[organelle].append(denormalize(output, stats).astype(np.float32, copy=False))
                done += tile_counts[job]
        reporter.emit("done", done, message="Prediction finished")
        stacked = image.ndim == 3 and plane == "all"
        return {organelle: np.stack(outputs) if stacked else outputs[0] for organelle, outputs in results.items()}

    def predict_files(
        self,
        inputs: Iterable[str | os.PathLike],
        output_dir: str | os.PathLike,
        plane: PlaneChoice = "best",
        callbacks: Iterable[Callback] | None = None,
        stop: StopToken | None = None,
        overwrite: bool = False,
    ) -> list[FileResult]:
        """Predict every input file (folders: their TIFF files) into ``<stem>_<Organelle>.ome.tiff``.

        Outputs are float32 OME-TIFFs carrying the input's pixel size. Before anything is computed the
        outputs are checked (:func:`.outputs.plan_outputs`): existing files are replaced only with
        ``overwrite``, organelle images among the inputs never. Nothing is skipped silently: every input
        (and every non-TIFF file found in a folder) gets a :class:`FileResult`; a file that fails gets an
        ``"error"`` entry and the others are still processed.
        """
        from ..data.io import read_image, write_prediction
        from .outputs import plan_outputs

        callbacks = list(callbacks or [])
        results = []
        for item in plan_outputs(inputs, output_dir, self.organelles, overwrite):
            path = item.path
            if item.skip_reason:
                results.append(FileResult(path, "skipped", item.skip_reason))
                continue
            try:
                image = read_image(path)
                predictions = self.predict(image.data, plane=plane, callbacks=callbacks, stop=stop)
                outputs = [
                    write_prediction(item.outputs[organelle], prediction, image, organelle)
                    for organelle, prediction in predictions.items()
                ]
            except StopRequested:
                raise
            except LightMyCellsError as exc:
                results.append(FileResult(path, "error", str(exc)))
            except Exception as exc:
                logger.exception("Unexpected error while predicting %s", path)
                results.append(FileResult(path, "error", f"{type(exc).__name__}: {exc}"))
            else:
                results.append(FileResult(path, "ok", f"wrote {len(outputs)} file(s)", outputs))
            logger.info("%s: %s %s", path.name, results[-1].status, results[-1].message)
        return results

    def _load(self, organelle: str, model: nn.Module | str | os.PathLike, normalization: str | None) -> _LoadedModel:
        card_normalization = None
        if not isinstance(model, nn.Module):
            from ..checkpoint import load_model

            model, card = load_model(model, self.device)
            if card.kind != "unetr":
                raise ModelError(
                    f"{card.path} holds a {card.kind} model (pretraining), not an organelle predictor; "
                    "fine-tune it first or pick a UNETR checkpoint."
                )
            if card.organelle and card.organelle != organelle:
                self.warnings.append(f"{Path(card.path).name} was trained for {card.organelle} but is used for {organelle}.")
                logger.warning("warning: %s", self.warnings[-1])
            card_normalization = card.normalization
        token_size = getattr(model, "token_size", None)
        if not isinstance(token_size, int) or token_size < 1:
            raise ModelError(f"{type(model).__name__} has no integer `token_size` attribute; it cannot be tiled.")
        model = model.to(self.device).eval()
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return _LoadedModel(model, normalization or card_normalization or "zscore", token_size)

    def _tile_size(self, loaded: _LoadedModel) -> int:
        return max(loaded.token_size, self.tile_size // loaded.token_size * loaded.token_size)

    def _count_tiles(self, plane: np.ndarray, loaded: _LoadedModel) -> int:
        return count_tiles(plane.shape, self._tile_size(loaded), self.overlap)

    def _run(self, loaded: _LoadedModel, image: np.ndarray, on_batch) -> np.ndarray:
        """Tiled prediction of one normalised 2D plane, shrinking batch then tiles on out-of-memory."""
        while True:
            tile_size = self._tile_size(loaded)
            try:
                output = predict_tiled(
                    image, lambda tiles: self._forward(loaded.model, tiles), tile_size,
                    self.overlap, self.batch_size, on_batch,
                )
                return output[0]
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._free_memory()
            self._shrink(loaded, tile_size, message)

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


def validate_tiling(tile_size: int, overlap: float, batch_size: int) -> None:
    """Check tile settings (before any model or image is loaded)."""
    if tile_size < 1 or batch_size < 1:
        raise ModelError(f"tile_size and batch_size must be positive, got {tile_size} and {batch_size}.")
    overlap_pixels(tile_size, overlap)


def validate_image(image: np.ndarray) -> np.ndarray:
    """Check that ``image`` is a finite, non-constant 2D or 3D numeric array; return it as an array."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise DataError(
            f"Expected a 2D image (YX) or a Z-stack (ZYX), got {image.ndim} dimensions {image.shape}. "
            "Split channels or time points into separate images."
        )
    if image.size == 0:
        raise DataError(f"The image is empty (shape {image.shape}).")
    if image.dtype.kind not in "uif":
        raise DataError(f"Unsupported pixel type {image.dtype}: use an integer or floating-point image.")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise DataError("The image contains NaN or infinite values; replace them before predicting.")
    if image.min() == image.max():
        raise DataError("The image is constant (no intensity variation); there is nothing to predict from.")
    return image


def select_planes(image: np.ndarray, plane: PlaneChoice) -> list[np.ndarray]:
    """The 2D planes to predict from: the image itself, or the best/indexed/all planes of a stack."""
    if image.ndim == 2:
        return [image]
    if plane == "all":
        return list(image)
    if plane == "best":
        index = best_focus_index(image)
        logger.info("Best-focus plane: %d of %d", index, image.shape[0])
        return [image[index]]
    if isinstance(plane, (int, np.integer)) and not isinstance(plane, bool):
        if not -image.shape[0] <= plane < image.shape[0]:
            raise DataError(
                f"Plane {plane} does not exist: the stack has {image.shape[0]} planes (0-{image.shape[0] - 1})."
            )
        return [image[plane]]
    raise DataError(f"Unknown plane {plane!r}: use 'best', 'all' or a plane index.")


def _organelle(name: str) -> str:
    try:
        return canonical_organelle(name)
    except ValueError as exc:
        raise ModelError(str(exc)) from exc
