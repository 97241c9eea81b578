"""Public models from the registry for the Predict widget: listed by organelle, downloaded once in the background."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from napari.utils import cancelable_progress
from napari.utils.notifications import show_info
from superqt.utils import ensure_main_thread

from ..constants import ORGANELLES, canonical_organelle
from ..errors import ModelError, StopRequested
from ..events import ProgressEvent, StopToken
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


def describe(entry: ModelEntry) -> str:
    """Tooltip text for a public model: what it is, where it comes from, its licence and citation."""
    lines = [f"{entry.name}: {entry.description or entry.organelle}"]
    lines += [
        f"{label}: {value}"
        for label, value in (("source", entry.source), ("licence", entry.licence), ("cite", entry.citation))
        if value
    ]
    return "\n".join(lines)


class ModelDownloads:
    """Downloads public models, each once, in worker threads, each with a cancelable progress bar in
    napari's activity dock.

    ``show_status`` receives one-line status messages; :meth:`close` cancels running downloads and
    ignores what workers send later.
    """

    def __init__(self, show_status: Callable[[str], None]):
        self.show_status = show_status
        self.paths: dict[str, Path] = {}
        self.running: dict[str, StopToken] = {}
        self._closed = False

    def start(self, entry: ModelEntry) -> None:
        """Download ``entry`` (or check its cached copy) unless it is done or under way."""
        name = entry.name
        if name in self.paths or name in self.running:
            return
        stop = self.running[name] = StopToken()
        self.show_status(f"Downloading {name}…")
        bar = cancelable_progress(total=0, desc=f"Downloading {name}", cancel_callback=stop.request)
        start_worker(
            fetch_model,
            entry,
            None,
            [partial(self._on_event, bar, stop)],
            stop,
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
        for stop in self.running.values():
            stop.request()

    def _on_event(self, bar: cancelable_progress, stop: StopToken, event: ProgressEvent) -> None:
        if (
            bar.is_canceled
        ):  # Cancel clicked in the activity dock (in the worker thread: stops the next chunk)
            stop.request()
        self._show_event(bar, event)

    @ensure_main_thread
    def _show_event(self, bar: cancelable_progress, event: ProgressEvent) -> None:
        if event.kind == "step":
            if event.total and bar.total != event.total:
                bar.total = event.total
            bar.update(event.step - bar.n)
        elif event.kind == "log" and not self._closed:
            show_info(event.message)  # the SHA-256 recorded at a first download (trust on first use)

    @unless_closed
    def _on_downloaded(self, name: str, path: Path) -> None:
        self.paths[name] = Path(path)
        self.show_status(f"Downloaded {name}")

    @unless_closed
    def _on_failed(self, name: str, error: Exception) -> None:
        if isinstance(error, StopRequested):
            self.show_status(f"Download of {name} cancelled")
            return
        self.show_status(f"Download of {name} failed")
        notify_error(error, f"Downloading {name}")

    def _on_finished(self, name: str, bar: cancelable_progress) -> None:
        self.running.pop(name, None)
        bar.close()
