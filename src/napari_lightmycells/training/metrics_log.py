"""A run's metrics outside napari: ``metrics.csv`` in the run folder (one row per epoch) and, when the
``tensorboard`` package is installed, TensorBoard event files under ``<run>/tensorboard``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..files import atomic_write

CSV_NAME = "metrics.csv"


class MetricsLog:
    """Writes the history of a run (``LoopState.history``: one dict per epoch) as it grows."""

    def __init__(self, folder: Path):
        self.path = folder / CSV_NAME
        self.tensorboard = _summary_writer(folder / "tensorboard")

    def write(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.csv`` from the whole history (so a resumed run's file matches its
        checkpoint), and add the last epoch to TensorBoard."""
        columns = list(dict.fromkeys(key for row in history for key in row))

        def write_csv(tmp: str) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, columns)
                writer.writeheader()
                writer.writerows(history)

        atomic_write(self.path, write_csv)
        if self.tensorboard is not None and history:
            last = history[-1]
            for name, value in last.items():
                if name not in ("epoch", "step"):
                    self.tensorboard.add_scalar(name, value, last["step"])
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _summary_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter  # an ImportError without the tensorboard package
    except ImportError:
        return None
    return SummaryWriter(str(folder))
