"""A live plot of training curves: losses on the left axis, PSNR on the right one, per epoch."""

from __future__ import annotations

from collections import defaultdict

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

STYLES = {"train": "-", "val": "--"}


class TrainingPlot(FigureCanvasQTAgg):
    """Curves of every ``*loss`` and ``*psnr`` metric of ``epoch`` events (train solid, validation dashed)."""

    def __init__(self, height_px: int = 220):
        figure = Figure(figsize=(4, 2.2), layout="constrained")
        super().__init__(figure)
        self.setMinimumHeight(height_px)
        self.loss_axis = figure.add_subplot(1, 2, 1)
        self.psnr_axis = figure.add_subplot(1, 2, 2)
        self.curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.clear()

    def clear(self) -> None:
        """Forget all curves (a new run starts)."""
        self.curves.clear()
        self._redraw()

    def add_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Add one epoch's metrics and redraw (when the GUI is idle)."""
        for name, value in metrics.items():
            if name.endswith(("loss", "psnr")):
                self.curves[name].append((epoch, float(value)))
        self._redraw()

    def _redraw(self) -> None:
        for axis, title in ((self.loss_axis, "loss"), (self.psnr_axis, "PSNR (dB)")):
            axis.clear()
            axis.set_title(title, fontsize=8)
            axis.set_xlabel("epoch", fontsize=7)
            axis.tick_params(labelsize=6)
        for name, points in sorted(self.curves.items()):
            axis = self.psnr_axis if name.endswith("psnr") else self.loss_axis
            epochs, values = zip(*points)
            axis.plot(epochs, values, STYLES.get(name.split("_")[0], ":"), marker=".", label=name)
        for axis in (self.loss_axis, self.psnr_axis):
            if axis.lines:
                axis.legend(fontsize=6)
        if self.loss_axis.lines and min(min(line.get_ydata()) for line in self.loss_axis.lines) > 0:
            self.loss_axis.set_yscale("log")
        self.draw_idle()
