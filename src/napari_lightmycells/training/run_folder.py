"""A run's output folder: a new run never replaces another one unless asked, checked before training.

A folder holding anything (except the run's own data folder and temporaries of killed writes) is an
earlier run: it is continued with ``resume`` (its ``last.pt``), replaced with ``overwrite``, or a new
folder is chosen (:func:`next_free_folder` for the GUI).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..files import TMP_SUFFIX, ensure_writable_folder, remove_stale_temporaries
from .config import ConfigError, RunConfig
from .metrics_log import CSV_NAME

logger = logging.getLogger(__name__)

BEST, LAST = "best.pt", "last.pt"
RUN_FILES = (BEST, LAST, CSV_NAME)


def earlier_run_entries(folder: str | os.PathLike, data: str | os.PathLike | None = None) -> list[Path]:
    """What ``folder`` holds besides the run's own ``data`` folder and stale temporaries."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    own = Path(data).resolve() if data else None
    return sorted(
        entry for entry in folder.iterdir() if entry.resolve() != own and not entry.name.endswith(TMP_SUFFIX)
    )


def prepare_run_folder(config: RunConfig, overwrite: bool = False) -> Path:
    """Check (before any data is read) that ``config.output`` may receive this run, and clean the
    temporaries that killed checkpoint writes left there. A non-empty folder is refused unless the run
    resumes from this folder's ``last.pt`` or ``overwrite`` is set (the earlier ``best.pt``/``last.pt``
    are then deleted)."""
    output = Path(config.output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"Run folder {output} is an existing file; give a folder with --output.")
    entries = earlier_run_entries(output, config.data)
    resuming_here = bool(config.resume) and Path(config.resume).resolve().parent == output.resolve()
    if entries and not resuming_here:
        if not overwrite:
            hint = f"continue it with --resume {output / LAST}, " if (output / LAST).is_file() else ""
            raise ConfigError(
                f"Run folder {output} is not empty ({', '.join(e.name for e in entries[:3])}"
                f"{', ...' if len(entries) > 3 else ''}): {hint}replace it with --overwrite, or choose another --output."
            )
        logger.warning("Overwriting the earlier run in %s (--overwrite).", output)
        for name in RUN_FILES:
            (output / name).unlink(missing_ok=True)
    ensure_writable_folder(output, "Run folder")
    stale = remove_stale_temporaries(output, RUN_FILES)
    if stale:
        logger.info(
            "Removed %d temporary file(s) left by an interrupted checkpoint write in %s.", len(stale), output
        )
    return output


def next_free_folder(folder: str | os.PathLike, data_name: str | None = None) -> Path:
    """``folder`` if it holds no run (nothing but a ``data_name`` subfolder), else the first of ``folder-2``,
    ``folder-3``... that holds none."""
    folder = Path(folder)
    candidate, number = folder, 1
    while candidate.exists() and (
        not candidate.is_dir() or earlier_run_entries(candidate, candidate / data_name if data_name else None)
    ):
        number += 1
        candidate = folder.with_name(f"{folder.name}-{number}")
    return candidate


def check_steps_left(checkpoint: dict[str, Any], config: RunConfig) -> None:
    """A resumed run must have steps left under ``max_steps``."""
    step = checkpoint["training_state"]["loop"]["step"]
    if config.max_steps is not None and step >= config.max_steps:
        raise ConfigError(
            f"{config.resume} is already at step {step} and max_steps is {config.max_steps}: "
            "give a larger --max-steps, or leave it out to train to the last epoch."
        )
