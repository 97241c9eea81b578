"""Safe output files: atomic writes that honour the umask, no silent overwrites, stale temporaries
cleaned, output folders checked before any long computation."""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import DataError

TMP_SUFFIX = ".tmp"


@functools.lru_cache(maxsize=1)
def file_mode() -> int:
    """Permissions of a new regular file under the process umask (``0o644`` for umask ``022``)."""
    try:
        status = Path("/proc/self/status").read_text()
        umask = int(re.search(r"^Umask:\s*([0-7]+)", status, re.MULTILINE).group(1), 8)
    except (OSError, AttributeError):
        umask = os.umask(0o022)  # no /proc: read by setting (once, cached)
        os.umask(umask)
    return 0o666 & ~umask


def temporary_file(path: Path) -> Path:
    """A new empty temporary file next to ``path`` (``.<name>.<random>.tmp``) with the umask's permissions
    (``mkstemp`` alone gives ``0600``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, file_mode())
    except (AttributeError, OSError):  # no fchmod (Windows): mkstemp's mode is kept
        pass
    os.close(fd)
    return Path(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` (same folder, atomic): readers
    see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = temporary_file(path)
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def is_temporary_of(entry: Path, names: Iterable[str]) -> bool:
    """Whether ``entry`` is a temporary file (or OME-Zarr folder) left by an atomic write of one of ``names``."""
    return entry.name.endswith(TMP_SUFFIX) and any(entry.name.startswith(f".{name}.") for name in names)


def remove_stale_temporaries(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporaries an interrupted (killed) write of ``names`` left in ``folder``; returns them."""
    folder, names = Path(folder), list(names)
    if not folder.is_dir():
        return []
    stale = [entry for entry in folder.iterdir() if is_temporary_of(entry, names)]
    for entry in stale:
        if entry.is_dir():  # an OME-Zarr folder (data.lazy.ome_zarr_output)
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return stale


def ensure_writable_folder(folder: str | os.PathLike, what: str = "Output folder") -> Path:
    """Create ``folder`` if needed and check that files can be written in it (a one-line
    :class:`DataError` otherwise), before any long computation."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{what} {folder} is an existing file, not a folder; give a folder path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=TMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise DataError(
            f"{what} {folder} is not writable ({error.strerror or error}); choose another folder."
        ) from None
    return folder


def check_new_file(path: str | os.PathLike, overwrite: bool = False, flag: str = "--overwrite") -> Path:
    """Check that ``path`` can be written: its folder is writable and it is not an existing file (unless
    ``overwrite``) nor a folder."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise DataError(f"{path} already exists; choose another name, or pass {flag} to replace it.")
    ensure_writable_folder(path.parent or Path("."), "Folder")
    return path
