"""Registry of published models, downloaded once into a local cache and verified by SHA-256.

Entries come from the built-in ``registry.json`` and, when set, from the JSON file named by the
``LIGHTMYCELLS_REGISTRY`` environment variable (a list of objects with ``name``, ``organelle``,
``url``, ``sha256`` and optionally ``description`` and ``modality``), so a lab can publish its own
models. Downloads go to ``LIGHTMYCELLS_CACHE`` (default ``~/.cache/napari-lightmycells``); a file
whose checksum does not match is never kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ModelError
from .files import file_mode

CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelEntry:
    name: str
    organelle: str
    url: str
    sha256: str
    description: str = ""
    modality: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.sha256[:12]}.pt"


def _entries_from_json(text: str, origin: str) -> list[ModelEntry]:
    try:
        items = json.loads(text)
        return [ModelEntry(**{**item, "modality": tuple(item.get("modality", ()))}) for item in items]
    except (ValueError, TypeError) as error:
        raise ModelError(f"Model registry {origin} is not a valid list of model entries: {error}") from None


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


def fetch_model(
    model: ModelEntry | str,
    cache: Path | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Path of ``model`` in the cache, downloading and checking its SHA-256 first if needed.

    ``progress(bytes_done, bytes_total_or_None)`` is called while downloading.
    """
    entry = find_entry(model) if isinstance(model, str) else model
    folder = Path(cache or cache_dir())
    target = folder / entry.filename
    if target.is_file() and sha256_of(target) == entry.sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=folder)
    os.fchmod(fd, file_mode())  # readable as the umask allows, not only by the owner
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=60) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total else None
            done = 0
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if digest.hexdigest() != entry.sha256:
            raise ModelError(
                f"Download of {entry.name} is corrupt or the file changed upstream "
                f"(sha256 {digest.hexdigest()[:12]}…, expected {entry.sha256[:12]}…); nothing was kept."
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as error:
        raise ModelError(
            f"Could not download {entry.name} from {entry.url}: {error}. Check the connection."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return target
