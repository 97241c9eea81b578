"""Loaded models kept between predictions, keyed by file, modification time, device and precision."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import ModelCard
from ..loading import load_model


class ModelCache:
    """Models loaded from files, reused while the file is unchanged; :meth:`clear` releases them.

    Thread-safe: the widget loads in worker threads. A file rewritten since it was loaded (new
    modification time) is loaded again and its stale entry dropped.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, int, str, str], tuple[nn.Module, ModelCard]] = {}
        self._lock = threading.Lock()

    def load(
        self, path: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "auto"
    ) -> tuple[nn.Module, ModelCard]:
        """The model in ``path`` on ``device`` and its card, loaded once per file version."""
        resolved = Path(path).resolve()
        mtime = resolved.stat().st_mtime_ns if resolved.exists() else 0  # a missing file fails in load_model
        key = (str(resolved), mtime, str(torch.device(device)), precision)
        with self._lock:
            if key not in self._models:
                loaded = load_model(path, device)
                self._models = {k: v for k, v in self._models.items() if k[0] != key[0] or k[2:] != key[2:]}
                self._models[key] = loaded
            return self._models[key]

    def clear(self) -> None:
        """Release every model (and the GPU memory cached for them)."""
        with self._lock:
            self._models.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __len__(self) -> int:
        return len(self._models)
