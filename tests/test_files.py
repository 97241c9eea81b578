"""Safe output files: umask-honouring atomic writes, stale temporaries, writable folders, no overwrites."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_lightmycells.checkpoint import atomic_save
from napari_lightmycells.data.io import write_ome_tiff
from napari_lightmycells.errors import DataError
from napari_lightmycells.files import (
    atomic_write,
    check_new_file,
    ensure_writable_folder,
    file_mode,
    remove_stale_temporaries,
)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    file_mode.cache_clear()
    yield
    os.umask(previous)
    file_mode.cache_clear()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_honour_the_umask(tmp_path, umask_022):
    tiff = write_ome_tiff(tmp_path / "prediction.ome.tiff", np.ones((8, 8), np.float32))
    checkpoint = atomic_save({"a": torch.ones(1)}, tmp_path / "best.pt")
    text = atomic_write(tmp_path / "notes.txt", lambda tmp: Path(tmp).write_text("hi"))
    assert file_mode() == 0o644
    assert {_mode(tiff), _mode(checkpoint), _mode(text)} == {0o644}


def test_a_stricter_umask_is_kept(tmp_path):
    previous = os.umask(0o077)
    file_mode.cache_clear()
    try:
        path = atomic_save({"a": torch.ones(1)}, tmp_path / "last.pt")
    finally:
        os.umask(previous)
        file_mode.cache_clear()
    assert _mode(path) == 0o600


def test_stale_temporaries_of_the_named_files_are_removed(tmp_path):
    stale = [tmp_path / ".last.pt.k3j2_x.tmp", tmp_path / ".best.pt.abc.tmp"]
    kept = [tmp_path / ".other.pt.abc.tmp", tmp_path / "last.pt", tmp_path / ".last.pt.notes"]
    for path in stale + kept:
        path.write_bytes(b"x" * 10)
    removed = remove_stale_temporaries(tmp_path, ["last.pt", "best.pt"])
    assert sorted(removed) == sorted(stale)
    assert all(path.exists() for path in kept) and not any(path.exists() for path in stale)


def test_writable_folder_is_created_and_files_are_refused(tmp_path):
    assert ensure_writable_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is an existing file, not a folder"):
        ensure_writable_folder(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_is_reported_in_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(DataError, match="is not writable") as info:
            ensure_writable_folder(folder)
    finally:
        folder.chmod(0o755)
    assert "\n" not in str(info.value)


def test_existing_files_are_not_replaced_unless_asked(tmp_path):
    path = tmp_path / "model.zip"
    assert check_new_file(path) == path
    path.write_text("precious")
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        check_new_file(path)
    assert check_new_file(path, overwrite=True) == path
    with pytest.raises(DataError, match="is a folder"):
        check_new_file(tmp_path)
