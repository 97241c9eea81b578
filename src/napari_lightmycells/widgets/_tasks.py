"""Helpers shared by the widgets: background workers and user-facing error notifications."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from superqt.utils import FunctionWorker

from ..devices import is_out_of_memory
from ..errors import LightMyCellsError

logger = logging.getLogger(__name__)

PREDICTION_MEMORY_HINT = (
    "Lower the tile size, predict one plane instead of all planes, or close other programs."
)


def start_worker(
    func: Callable, *args, returned: Callable, errored: Callable, finished: Callable
) -> FunctionWorker:
    """Run ``func(*args)`` in a napari worker thread (listed in the activity dock) and start it.

    Errors reach ``errored`` only: napari's own workers would also post every exception as a
    traceback notification, which is noise for errors a user can fix. Warnings become notifications.
    """
    return create_worker(
        func,
        *args,
        _worker_class=FunctionWorker,
        _connect={"returned": returned, "errored": errored, "finished": finished, "warned": _show_warning},
    )


def _show_warning(warning: tuple) -> None:
    show_warning(str(warning[0]))


def notify_error(error: BaseException, action: str, memory_hint: str = PREDICTION_MEMORY_HINT) -> None:
    """Show ``error`` as a napari error notification with a hint; log unexpected ones with their traceback."""
    if isinstance(error, LightMyCellsError):
        show_error(f"{action} failed: {error}")
    elif is_out_of_memory(error):
        show_error(f"{action} ran out of memory. {memory_hint}")
    else:
        logger.error("%s failed", action, exc_info=error)
        show_error(
            f"{action} failed unexpectedly ({type(error).__name__}: {error}). "
            "The traceback is in the terminal log; please report it."
        )


def unless_closed(handler):
    """Drop calls arriving after the widget (with a ``_closed`` flag) was closed: late worker signals."""

    @wraps(handler)
    def guarded(self, *args):
        if not self._closed:
            handler(self, *args)

    return guarded
