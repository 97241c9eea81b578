"""bioimage.io export for the Predict widget: the ticked organelles' models as packages, in the background."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import Container, FileEdit, PushButton
from napari.utils.notifications import show_info

from ..errors import DataError, ModelError
from ._tasks import notify_error, start_worker, unless_closed


def export_models(jobs: list[tuple[Path, Path]]) -> list[Path]:
    """Worker body: export each ``(checkpoint, zip)`` pair as a bioimage.io package."""
    from ..model_zoo import export_bioimageio

    return [export_bioimageio(checkpoint, output) for checkpoint, output in jobs]


def export_target(value: Path | None) -> Path:
    """The chosen ``.zip`` destination; a :class:`ModelError` when none is chosen."""
    if value is None or not str(value).strip("."):
        raise ModelError("Choose where to write the bioimage.io package (export to …).")
    return Path(value).with_suffix(".zip")


def export_jobs(target: Path, checkpoints: dict[str, Path]) -> list[tuple[Path, Path]]:
    """``(checkpoint, zip)`` pairs: ``target`` for one organelle, ``<target>_<Organelle>.zip`` for several."""
    if not checkpoints:
        raise ModelError("No organelle selected: tick the organelle whose model to export.")
    if len(checkpoints) == 1:
        return [(next(iter(checkpoints.values())), target)]
    return [
        (checkpoint, target.with_name(f"{target.stem}_{organelle}.zip"))
        for organelle, checkpoint in checkpoints.items()
    ]


class ExportPanel(Container):
    """Destination and button exporting the models that ``checkpoints()`` returns (organelle -> file)."""

    def __init__(self, checkpoints: Callable[[], dict[str, Path]], show_status: Callable[[str], None]):
        self.checkpoints = checkpoints
        self.show_status = show_status
        self.path = FileEdit(
            label="export to",
            mode="w",
            filter="*.zip",
            nullable=True,
            tooltip="bioimage.io package (.zip) for the ticked organelle's model; several: one file each",
        )
        self.button = PushButton(text="Export to bioimage.io")
        super().__init__(widgets=[self.path, self.button])
        self.margins = (0, 0, 0, 0)
        self._closed = False
        self.button.clicked.connect(self.export)
        self.native.destroyed.connect(lambda: setattr(self, "_closed", True))

    def export(self) -> None:
        """Write the packages in a worker thread (bad choices become notifications)."""
        try:
            jobs = export_jobs(export_target(self.path.value), self.checkpoints())
        except (DataError, ModelError) as error:
            notify_error(error, "Export")
            return
        self.button.enabled = False
        self.show_status(f"Exporting {len(jobs)} model(s) to bioimage.io…")
        start_worker(
            export_models,
            jobs,
            returned=self._on_exported,
            errored=self._on_failed,
            finished=self._on_finished,
        )

    @unless_closed
    def _on_exported(self, paths: list[Path]) -> None:
        self.show_status(f"Exported {', '.join(path.name for path in paths)}")
        show_info(f"bioimage.io package(s) written: {', '.join(map(str, paths))}")

    @unless_closed
    def _on_failed(self, error: Exception) -> None:
        notify_error(error, "Export")

    @unless_closed
    def _on_finished(self) -> None:
        self.button.enabled = True
