"""Shared fixtures: a tiny organelle checkpoint, a small synthetic LightMyCells study, the real studies and a
tiny model fine-tuned on a real crop."""

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from napari_lightmycells.checkpoint import save_checkpoint
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.models import create_model

# Real studies live in shared/ beside the project checkout (never copied into it); see its SOURCES.md.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def real_studies() -> Path:
    """``../shared/data/real-studies`` (sephace: BF 6 planes + DAPI, 2 cases; isl: PC 5 planes + DAPI)."""
    folder = SHARED_DATA / "real-studies"
    if not folder.is_dir():
        pytest.skip(f"real microscopy studies not found at {folder} (shared/ beside the project)")
    return folder


@pytest.fixture(scope="session")
def real_raw_isl() -> Path:
    """``../shared/data/real-raw/isl``: the original PNGs of the isl study, byte for byte as published."""
    folder = SHARED_DATA / "real-raw" / "isl"
    if not folder.is_dir():
        pytest.skip(f"original isl PNGs not found at {folder} (shared/ beside the project)")
    return folder


@pytest.fixture
def one_thread():
    """Tiny models are overhead-bound: one intra-op thread is faster and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def notifications():
    """napari notifications shown during the test (errors, warnings, infos), in order."""
    from napari.utils.notifications import notification_manager

    seen = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained ``unetr_tiny`` Nucleus checkpoint for BF (64 px crop size, 8 px tokens)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny_nucleus.pt"
    return save_checkpoint(path, create_model("unetr_tiny"), organelle="Nucleus", modality=("BF",))


@pytest.fixture(scope="session")
def synthetic_study(tmp_path_factory):
    """One 96x96 case: BF planes ``image_1_BF_z{0,1,2}.ome.tiff`` and ``image_1_Nucleus.ome.tiff``."""
    folder = tmp_path_factory.mktemp("study")
    return make_synthetic_study(folder, n_cases=1, size=96, n_planes=3, organelles=("Nucleus",))


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """A folder nobody may write in: ``chmod 555``, and as root (who ignores modes) creating files in it
    fails with EACCES as it would for a user."""
    import errno
    import os
    import tempfile

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        mkstemp = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
            return mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    yield folder
    folder.chmod(0o755)


# isl (phase contrast -> DAPI, 1024²): train on the top half, hold out the bottom-right quadrant.
REAL_TRAIN_REGION = (slice(0, 512), slice(0, 1024))
REAL_HELD_OUT_REGION = (slice(512, 1024), slice(512, 1024))


@pytest.fixture(scope="session")
def real_trained_nucleus(real_studies, tmp_path_factory):
    """``unetr_tiny`` fine-tuned for 100 steps (128 px crops, ~1 min on one busy core) on the top half of the isl
    field; ``checkpoint``, and the held-out quadrant's ``planes`` (5, 512, 512) and ``target`` (512, 512)."""
    from napari_lightmycells.data.io import read_image
    from napari_lightmycells.data.regions import write_region_case
    from napari_lightmycells.data.study import discover_study
    from napari_lightmycells.training.config import load_config
    from napari_lightmycells.training.finetune import finetune

    case = discover_study(real_studies / "isl", organelle="Nucleus").cases[0]
    folder = tmp_path_factory.mktemp("real")
    write_region_case(case, *REAL_TRAIN_REGION, folder / "train", case_id=1)
    config = load_config(
        "tiny_cpu",
        data=str(folder / "train"),
        output=str(folder / "run"),
        crop_size=128,
        batch_size=4,
        samples_per_case=80,
        epochs=5,
        max_steps=100,
        val_fraction=0.0,
        lr=2e-3,
        warmup_epochs=0.2,
        preview_every=0,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        result = finetune(dataclasses.replace(config, patience=None))
    finally:
        torch.set_num_threads(threads)
    rows, columns = REAL_HELD_OUT_REGION
    planes = [read_image(plane.path).data[rows, columns] for plane in case.planes()]
    target = read_image(case.targets["Nucleus"]).data[rows, columns]
    return SimpleNamespace(checkpoint=result.last_path, planes=planes, target=target, steps=result.step)
