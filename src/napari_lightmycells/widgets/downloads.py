"""Public models from the registry for the Predict widget: listed by organelle, downloaded once in the background."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from napari.utils import progress
from superqt.utils import ensure_main_thread

from ..constants import ORGANELLES, canonical_organelle
from ..errors import ModelError
from ..hub import ModelEntry, fetch_model, known_models
from ._tasks import notify_error, start_worker, unless_closed


def public_models() -> dict[str, list[ModelEntry]]:
    """Downloadable models by organelle (none, with a notification, if the user's registry is broken)."""
    by_organelle: dict[str, list[ModelEntry]] = {organelle: [] for organelle in ORGANELLES}
    try:
        entries = known_models()
    except ModelError as error:
        notify_error(error, "Listing public models")
        entries = []
    for entry in entries:
        by_organelle[canonical_organelle(entry.organelle)].append(entry)
    return by_organelle


class ModelDownloads:
    """Downloads public models, each once, in worker threads, with a napari progress bar each.

    ``show_status`` receives one-line status messages; :meth:`close` ignores what workers send later.
    """

    def __init__(self, show_status: Callable[[str], None]):
        self.show_status = show_status
        self.paths: dict[str, Path] = {}
        self.running: set[str] = set()
        self._closed = False

    def start(self, entry: ModelEntry) -> None:
        """Download ``entry`` unless it is downloaded or downloading."""
        name = entry.name
        if name in self.paths or name in self.running:
            return
        self.running.add(name)
        self.show_status(f"Downloading {name}…")
        bar = progress(total=0, desc=f"Downloading {name}")
        start_worker(
            fetch_model,
            entry,
            None,
            partial(self._on_progress, bar),
            returned=partial(self._on_downloaded, name),
            errored=partial(self._on_failed, name),
            finished=partial(self._on_finished, name, bar),
        )

    def path(self, name: str, organelle: str) -> Path:
        """The downloaded file of model ``name``; a :class:`ModelError` if it is not there (yet)."""
        if name not in self.paths:
            state = "is still downloading" if name in self.running else "could not be downloaded"
            raise ModelError(f"The {organelle} model {name} {state}; wait for it or choose another model.")
        return self.paths[name]

    def close(self) -> None:
        self._closed = True

    @ensure_main_thread
    def _on_progress(self, bar: progress, done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    @unless_closed
    def _on_downloaded(self, name: str, path: Path) -> None:
        self.paths[name] = Path(path)
        self.show_status(f"Downloaded {name}")

    @unless_closed
    def _on_failed(self, name: str, error: Exception) -> None:
        self.show_status(f"Download of {name} failed")
        notify_error(error, f"Downloading {name}")

    def _on_finished(self, name: str, bar: progress) -> None:
        self.running.discard(name)
        bar.close()
