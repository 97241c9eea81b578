"""A live plot of training curves: losses on the left, PSNR on the right, per epoch, in napari's colours."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from napari.utils.theme import get_theme

STYLES = {"train": "-", "val": "--"}


class TrainingPlot(FigureCanvasQTAgg):
    """Curves of every ``*loss`` (and ``*psnr``) metric of ``epoch`` events (train solid, validation dashed).

    Colours follow a napari theme (``"dark"``, ``"light"``, ``"system"`` or a custom one): call
    :meth:`set_theme` when the viewer's theme changes.
    """

    def __init__(self, with_psnr: bool = True, height_px: int = 220, theme: str = "dark"):
        figure = Figure(figsize=(4, 2.2), layout="constrained")
        super().__init__(figure)
        self.setMinimumHeight(height_px)
        self.loss_axis = figure.add_subplot(1, 2 if with_psnr else 1, 1)
        self.psnr_axis = figure.add_subplot(1, 2, 2) if with_psnr else None
        self.axes = [axis for axis in (self.loss_axis, self.psnr_axis) if axis is not None]
        for axis, title in zip(self.axes, ("loss", "PSNR (dB)")):
            axis.set_title(title, fontsize=8)
            axis.set_xlabel("epoch", fontsize=7)
            axis.tick_params(labelsize=6)
        self.curves: dict[str, list[tuple[int, float]]] = {}
        self._lines: dict[str, Line2D] = {}
        self.set_theme(theme)

    def set_theme(self, theme: str) -> None:
        """Background, text, axes and legends in the colours of napari's ``theme``."""
        colors = get_theme(theme)
        background, text = colors.background.as_hex(), colors.text.as_hex()
        grid = colors.highlight.as_hex()
        self.figure.set_facecolor(background)
        for axis in self.axes:
            axis.set_facecolor(background)
            axis.title.set_color(text)
            axis.xaxis.label.set_color(text)
            axis.tick_params(colors=text, which="both")
            for spine in axis.spines.values():
                spine.set_color(grid)
            axis.grid(True, color=grid, linewidth=0.5, alpha=0.5)
            legend = axis.get_legend()
            if legend is not None:
                self._style_legend(legend, background, text, grid)
        self._colors = (background, text, grid)
        self.draw_idle()

    @staticmethod
    def _style_legend(legend, background: str, text: str, edge: str) -> None:
        legend.get_frame().set_facecolor(background)
        legend.get_frame().set_edgecolor(edge)
        for label in legend.get_texts():
            label.set_color(text)

    def clear(self) -> None:
        """Forget all curves (a new run starts)."""
        for line in self._lines.values():
            line.remove()
        self.curves.clear()
        self._lines.clear()
        self._refresh()

    def add_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Add one epoch's metrics; the canvas redraws when the GUI is idle."""
        for name, value in metrics.items():
            if name.endswith("loss") or (name.endswith("psnr") and self.psnr_axis is not None):
                self.curves.setdefault(name, []).append((epoch, float(value)))
                self._line(name).set_data(*zip(*self.curves[name]))
        self._refresh()

    def _line(self, name: str) -> Line2D:
        if name not in self._lines:
            axis = self.psnr_axis if name.endswith("psnr") else self.loss_axis
            (self._lines[name],) = axis.plot(
                [], [], STYLES.get(name.split("_")[0], ":"), marker=".", label=name
            )
            self._style_legend(axis.legend(fontsize=6), *self._colors)
        return self._lines[name]

    def _refresh(self) -> None:
        for axis in self.axes:
            axis.relim()
            axis.autoscale_view()
        self.draw_idle()
