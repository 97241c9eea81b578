"""Registry of published models, downloaded once into a local cache and checked by SHA-256.

Entries come from the built-in ``registry.json`` and, when set, from the JSON file named by the
``LIGHTMYCELLS_REGISTRY`` environment variable (a list of objects with ``name``, ``organelle``, ``url``
(http or https) or ``drive_id`` (a Google Drive file), and optionally ``sha256``, ``description``,
``modality``, ``source``, ``citation``, ``licence`` and ``size`` in bytes), so a lab can publish its
own models. Files go to ``LIGHTMYCELLS_CACHE`` (default ``~/.cache/napari-lightmycells``) through
pooch (progress, checksum; nothing is kept from a failed or cancelled download), Drive files through
a pooch downloader that follows Drive's confirmation page for large files (parsed by gdown).

An entry that pins ``sha256`` is verified strictly. Without one, the SHA-256 of the first download is
recorded beside the file (``<file>.sha256``) and reported; a cached file that no longer matches it is
refused (trust on first use). A cached model is used without any network access.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from .constants import canonical_organelle
from .errors import ModelError
from .events import Callback, Reporter, StopToken
from .files import file_mode

CHUNK = 1 << 20
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")
DRIVE_ID = re.compile(r"[A-Za-z0-9_-]{10,100}")
SHA256 = re.compile(r"[0-9a-f]{64}")
MODEL_SUFFIXES = (".pt", ".pth", ".zip")
DRIVE_URL = "https://drive.google.com/uc"  # LIGHTMYCELLS_DRIVE_URL overrides it (a mirror, or tests)
SPACE_MARGIN = 200 << 20  # free space left after a download


@dataclass(frozen=True)
class ModelEntry:
    """One published model; ``size`` (bytes, approximate) lets the disk space be checked up front."""

    name: str
    organelle: str
    url: str = ""
    drive_id: str = ""
    sha256: str = ""
    description: str = ""
    modality: tuple[str, ...] = ()
    source: str = ""
    citation: str = ""
    licence: str = ""
    size: int = 0

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ModelError(
                f"Model name {self.name!r} is not allowed: up to 80 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit."
            )
        if bool(self.url) == bool(self.drive_id):
            raise ModelError(f"Model {self.name}: give either a url or a drive_id.")
        if self.url and urlsplit(self.url).scheme not in ("http", "https"):
            raise ModelError(f"Model {self.name}: only http(s) URLs are downloaded, not {self.url!r}.")
        if self.drive_id and not DRIVE_ID.fullmatch(self.drive_id):
            raise ModelError(f"Model {self.name}: {self.drive_id!r} is not a Google Drive file id.")
        if self.sha256 and not SHA256.fullmatch(self.sha256):
            raise ModelError(f"Model {self.name}: sha256 must be 64 lowercase hexadecimal digits.")
        try:
            object.__setattr__(self, "organelle", canonical_organelle(self.organelle))
        except ValueError as error:
            raise ModelError(f"Model {self.name}: {error}") from None

    @property
    def filename(self) -> str:
        suffix = Path(urlsplit(self.url).path).suffix.lower() if self.url else ".pth"
        return self.name + (suffix if suffix in MODEL_SUFFIXES else ".pt")

    @property
    def download_url(self) -> str:
        if self.url:
            return self.url
        return f"{os.environ.get('LIGHTMYCELLS_DRIVE_URL', DRIVE_URL)}?export=download&id={self.drive_id}"


def _entries_from_json(text: str, origin: str) -> list[ModelEntry]:
    try:
        items = json.loads(text)
        return [ModelEntry(**{**item, "modality": tuple(item.get("modality", ()))}) for item in items]
    except (ValueError, TypeError, AttributeError) as error:
        raise ModelError(f"Model registry {origin} is not a valid list of model entries: {error}") from None
    except ModelError as error:
        raise ModelError(f"Model registry {origin}: {error}") from None


def known_models() -> list[ModelEntry]:
    """Built-in entries followed by those of ``$LIGHTMYCELLS_REGISTRY``."""
    entries = _entries_from_json(
        resources.files(__package__).joinpath("registry.json").read_text(), "registry.json"
    )
    extra = os.environ.get("LIGHTMYCELLS_REGISTRY")
    if extra:
        path = Path(extra)
        if not path.is_file():
            raise ModelError(f"LIGHTMYCELLS_REGISTRY points to {path}, which does not exist.")
        entries += _entries_from_json(path.read_text(), str(path))
    return entries


def cache_dir() -> Path:
    return Path(os.environ.get("LIGHTMYCELLS_CACHE", Path.home() / ".cache" / "napari-lightmycells"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_entry(name: str) -> ModelEntry:
    for entry in known_models():
        if entry.name == name:
            return entry
    raise ModelError(f"No registered model named {name!r}; `lightmycells predict --list-models` shows them.")


def cached_path(entry: ModelEntry, cache: Path | None = None) -> Path | None:
    """The cached file of ``entry`` if it was downloaded, else None (the file is not verified here)."""
    path = Path(cache or cache_dir()) / entry.filename
    return path if path.is_file() else None


def fetch_model(
    model: ModelEntry | str,
    cache: Path | None = None,
    callbacks: Iterable[Callback] | None = None,
    stop: StopToken | None = None,
) -> Path:
    """Path of ``model`` in the cache, downloading it first if needed; see the module docstring for checks.

    Reports ``start``/``step``/``log``/``done`` events (task ``"download"``, steps in bytes); ``stop``
    cancels the download (:class:`~napari_lightmycells.errors.StopRequested`), keeping nothing.
    """
    entry = find_entry(model) if isinstance(model, str) else model
    folder = Path(cache or cache_dir())
    target = folder / entry.filename
    reporter = Reporter("download", callbacks)
    if target.is_file():
        if not entry.sha256:
            return _trusted_on_first_use(entry, target, reporter)
        if sha256_of(target) == entry.sha256:
            return target  # else a stale or damaged copy of a pinned file, replaced below
    folder.mkdir(parents=True, exist_ok=True)
    _check_space(folder, entry.size, entry.name)
    reporter.emit("start", message=f"Downloading {entry.name}")
    _download(entry, folder, _Progress(reporter, stop, folder, entry.name))
    os.chmod(target, file_mode())  # readable as the umask allows, not only by the owner
    if not entry.sha256:
        _trusted_on_first_use(entry, target, reporter)
    reporter.emit("done", message=f"Downloaded {entry.name}.", path=str(target))
    return target


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _trusted_on_first_use(entry: ModelEntry, path: Path, reporter: Reporter) -> Path:
    """``path`` if it matches the SHA-256 recorded at its first use; at the first use, record it (and say so)."""
    digest = sha256_of(path)
    record = _record(path)
    if not record.is_file():
        record.write_text(f"{digest}  {path.name}\n")
        os.chmod(record, file_mode())
        reporter.emit(
            "log",
            message=f"{entry.name}: no checksum is published, so the SHA-256 of this first copy, {digest}, "
            f"is recorded in {record.name} and checked at every later use.",
        )
        return path
    recorded = (record.read_text().split() or [""])[0]
    if digest != recorded:
        raise ModelError(
            f"The cached {entry.name} changed since its first download (SHA-256 {digest[:12]}…, recorded "
            f"{recorded[:12]}…), so it is not used. Delete {path} and {record.name} to download it again."
        )
    return path


def _check_space(folder: Path, needed: int, name: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed and needed + SPACE_MARGIN > free:
        raise ModelError(
            f"Not enough disk space for {name}: {needed / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free in {folder} "
            "(set LIGHTMYCELLS_CACHE to a larger disk)."
        )


class _Progress:
    """tqdm-like object that pooch drives: reports steps, honours ``stop``, checks the announced size."""

    def __init__(self, reporter: Reporter, stop: StopToken | None, folder: Path, name: str):
        self.reporter, self.stop, self.folder, self.name = reporter, stop, folder, name
        self._total: int | None = None
        self.n = 0

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = value or None
        _check_space(self.folder, value, self.name)

    def update(self, n: int) -> None:
        if self.stop is not None:
            self.stop.check()
        self.n = min(self.n + n, self._total) if self._total else self.n + n
        self.reporter.emit("step", self.n, total=self._total)

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        pass


def _download(entry: ModelEntry, folder: Path, progress: _Progress) -> None:
    import pooch
    import requests

    http = pooch.HTTPDownloader(progressbar=progress, timeout=60, chunk_size=CHUNK)
    downloader = _drive_downloader(http) if entry.drive_id else http
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # we report the download and its checksum ourselves
    try:
        pooch.retrieve(
            entry.download_url,
            known_hash=f"sha256:{entry.sha256}" if entry.sha256 else None,
            fname=entry.filename,
            path=folder,
            downloader=downloader,
        )
    except ValueError as error:
        if "hash" not in str(error).lower():
            raise ModelError(f"Could not download {entry.name}: {error}") from None
        raise ModelError(
            f"Download of {entry.name} is corrupt or the file changed upstream (SHA-256 differs from the "
            f"registry's {entry.sha256[:12]}…); nothing was kept."
        ) from None
    except (requests.RequestException, OSError) as error:
        raise ModelError(
            f"Could not download {entry.name} from {entry.download_url}: {error}. Check the connection."
        ) from None
    finally:
        logger.setLevel(level)


def _drive_downloader(http):
    """A pooch downloader for Google Drive: large files first answer with a confirmation page (HTML) whose
    form gdown parses into the real download URL."""

    def download(url: str, output_file: str, pooch_instance) -> None:
        http(url, output_file, pooch_instance)
        if not _is_html(output_file):
            return
        from gdown.download import get_url_from_gdrive_confirmation
        from gdown.exceptions import FileURLRetrievalError

        try:
            confirmed = get_url_from_gdrive_confirmation(Path(output_file).read_text(errors="replace"))
        except FileURLRetrievalError as error:
            raise ModelError(f"Google Drive refused the download: {' '.join(str(error).split())}") from None
        http(confirmed, output_file, pooch_instance)
        if _is_html(output_file):
            raise ModelError("Google Drive answered with a web page instead of the file; try again later.")

    return download


def _is_html(path: str) -> bool:
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        head = handle.read(512).lstrip().lower()
        return head.startswith((b"<!doctype html", b"<html"))
    return False
