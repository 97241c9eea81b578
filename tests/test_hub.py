"""Registry downloads against a local HTTP server on 127.0.0.1 (``model_server`` in conftest.py: plain
files and a Google Drive look-alike with its confirmation page); no test reaches the internet."""

import hashlib
import json
import os
import stat
from collections import namedtuple
from urllib.parse import urlsplit

import pytest

from napari_lightmycells import hub
from napari_lightmycells.checkpoint import save_checkpoint
from napari_lightmycells.cli import main
from napari_lightmycells.constants import ORGANELLES
from napari_lightmycells.errors import ModelError, StopRequested
from napari_lightmycells.events import StopToken
from napari_lightmycells.files import file_mode
from napari_lightmycells.hub import ModelEntry, fetch_model, find_entry, known_models
from napari_lightmycells.loading import load_model
from napari_lightmycells.models import create_model


def drive_entry(server, **fields):
    return ModelEntry("drive-nucleus", "nucleus", drive_id=server.drive_id, **fields)


def test_drive_confirmation_page_then_trust_on_first_use(model_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTMYCELLS_DRIVE_URL", f"{model_server.base}/uc")
    events = []
    path = fetch_model(drive_entry(model_server), cache=tmp_path / "cache", callbacks=[events.append])
    assert [urlsplit(r).path for r in model_server.requests] == ["/uc", "/download"]
    assert (
        path.name == "drive-nucleus.pth" and hashlib.sha256(path.read_bytes()).hexdigest() == model_server.sha
    )
    assert load_model(path)[1].organelle == "Nucleus"
    record = path.with_name("drive-nucleus.pth.sha256")
    assert record.read_text().split() == [model_server.sha, "drive-nucleus.pth"]
    logs = [e.message for e in events if e.kind == "log"]
    assert len(logs) == 1 and model_server.sha in logs[0]  # shown to the user
    assert events[0].kind == "start" and events[-1].kind == "done"
    steps = [e for e in events if e.kind == "step"]
    assert steps[-1].step == steps[-1].total == model_server.size

    monkeypatch.setenv("LIGHTMYCELLS_DRIVE_URL", "http://127.0.0.1:9/unreachable")  # offline from now on
    assert fetch_model(drive_entry(model_server), cache=tmp_path / "cache") == path
    assert len(model_server.requests) == 2

    with open(path, "r+b") as handle:  # the cached file changes after its first use
        handle.seek(100)
        handle.write(b"tampered")
    with pytest.raises(ModelError, match="changed since its first download") as caught:
        fetch_model(drive_entry(model_server), cache=tmp_path / "cache")
    assert "\n" not in str(caught.value)
    assert len(model_server.requests) == 2 and path.exists()  # refused, not silently replaced


def test_small_drive_file_needs_no_confirmation(model_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTMYCELLS_DRIVE_URL", f"{model_server.base}/uc-small")
    path = fetch_model(drive_entry(model_server), cache=tmp_path / "cache")
    assert (
        len(model_server.requests) == 1 and hashlib.sha256(path.read_bytes()).hexdigest() == model_server.sha
    )


def test_drive_error_page_is_a_clear_error_and_keeps_nothing(model_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTMYCELLS_DRIVE_URL", f"{model_server.base}/uc-quota")
    with pytest.raises(ModelError, match="Google Drive refused the download: Too many users"):
        fetch_model(drive_entry(model_server), cache=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_cached_copy_without_a_record_is_recorded_not_downloaded(model_server, tmp_path, monkeypatch):
    """A copy pooch completed but whose record was never written (process killed in between) is trusted once."""
    monkeypatch.setenv("LIGHTMYCELLS_DRIVE_URL", f"{model_server.base}/uc-small")
    path = fetch_model(drive_entry(model_server), cache=tmp_path / "cache")
    record = path.with_name(path.name + ".sha256")
    record.unlink()
    events = []
    assert fetch_model(drive_entry(model_server), cache=tmp_path / "cache", callbacks=[events.append]) == path
    assert len(model_server.requests) == 1 and record.read_text().split()[0] == model_server.sha
    assert [e.kind for e in events] == ["log"] and model_server.sha in events[0].message


def test_pinned_checksum_is_verified_strictly(model_server, tmp_path):
    entry = ModelEntry("tiny-nucleus", "Nucleus", url=model_server.url, sha256=model_server.sha)
    path = fetch_model(entry, cache=tmp_path / "cache")
    assert load_model(path)[1].organelle == "Nucleus"
    assert not path.with_name(path.name + ".sha256").exists()
    assert fetch_model(entry, cache=tmp_path / "cache") == path and len(model_server.requests) == 1
    path.write_bytes(b"damaged")  # a damaged cached copy of a pinned file is replaced
    assert fetch_model(entry, cache=tmp_path / "cache") == path and len(model_server.requests) == 2
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model_server.sha


def test_checksum_mismatch_keeps_nothing(model_server, tmp_path):
    entry = ModelEntry("tiny-nucleus", "Nucleus", url=model_server.url, sha256="0" * 64)
    with pytest.raises(ModelError, match="corrupt or the file changed upstream"):
        fetch_model(entry, cache=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_cancel_keeps_nothing(model_server, tmp_path):
    stop = StopToken()

    def cancel_on_first_step(event):
        if event.kind == "step":
            stop.request()

    entry = ModelEntry("tiny-nucleus", "Nucleus", url=model_server.url)
    with pytest.raises(StopRequested):
        fetch_model(entry, cache=tmp_path / "cache", callbacks=[cancel_on_first_step], stop=stop)
    assert list((tmp_path / "cache").iterdir()) == []


def test_disk_space_is_checked_before_downloading(model_server, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(hub.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    big = ModelEntry("big", "Actin", url=model_server.url, size=10**9)
    with pytest.raises(ModelError, match=r"Not enough disk space for big: 1.00 GB needed, 0.00 GB free"):
        fetch_model(big, cache=tmp_path / "cache")
    assert model_server.requests == []  # refused before any request
    monkeypatch.setattr(
        hub, "SPACE_MARGIN", model_server.size * 2
    )  # the size the model_server announces is checked too
    with pytest.raises(ModelError, match="Not enough disk space for unsized"):
        fetch_model(ModelEntry("unsized", "Actin", url=model_server.url), cache=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    entry = ModelEntry("gone", "Nucleus", url="http://127.0.0.1:9/missing.pt", sha256="0" * 64)
    with pytest.raises(ModelError, match="Could not download gone"):
        fetch_model(entry, cache=tmp_path)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "/../../x/evil"}, "not allowed"),
        ({"name": ".."}, "not allowed"),
        ({"name": "a/b"}, "not allowed"),
        ({"url": "file:///etc/passwd"}, "only http"),
        ({"url": "ftp://example.org/m.pt"}, "only http"),
        ({"url": "", "drive_id": "../../evil"}, "not a Google Drive file id"),
        ({"url": ""}, "either a url or a drive_id"),
        ({"sha256": "abc"}, "64 lowercase hexadecimal"),
        ({"organelle": "Golgi"}, "Unknown organelle"),
    ],
)
def test_bad_entries_are_refused(fields, message):
    with pytest.raises(ModelError, match=message):
        ModelEntry(**{"name": "ok", "organelle": "Nucleus", "url": "https://example.org/m.pt", **fields})


def test_user_registry_file_extends_known_models(tmp_path, monkeypatch, model_server):
    registry = tmp_path / "models.json"
    registry.write_text(
        json.dumps(
            [
                {
                    "name": "lab-nucleus",
                    "organelle": "Nucleus",
                    "url": model_server.url,
                    "sha256": model_server.sha,
                    "modality": ["BF"],
                }
            ]
        )
    )
    monkeypatch.setenv("LIGHTMYCELLS_REGISTRY", str(registry))
    monkeypatch.setenv("LIGHTMYCELLS_CACHE", str(tmp_path / "cache"))
    assert find_entry("lab-nucleus").modality == ("BF",)
    assert known_models()[-1].name == "lab-nucleus"
    assert fetch_model("lab-nucleus").parent == tmp_path / "cache"
    registry.write_text(
        json.dumps([{"name": "/../../x/evil", "organelle": "Nucleus", "url": model_server.url}])
    )
    with pytest.raises(ModelError, match="models.json: Model name '/../../x/evil' is not allowed"):
        known_models()
    registry.write_text("{not json")
    with pytest.raises(ModelError, match="not a valid list"):
        known_models()
    with pytest.raises(ModelError, match="No registered model"):
        monkeypatch.delenv("LIGHTMYCELLS_REGISTRY")
        find_entry("lab-nucleus")


def test_builtin_registry_lists_the_four_published_biapy_models(monkeypatch):
    monkeypatch.delenv("LIGHTMYCELLS_REGISTRY", raising=False)
    entries = known_models()
    assert sorted(e.organelle for e in entries) == sorted(ORGANELLES)
    for entry in entries:
        assert entry.drive_id and entry.filename == f"{entry.name}.pth"
        assert "lightmycells" in entry.source and "Franco-Barranco" in entry.citation and entry.licence
        assert entry.download_url.startswith("https://drive.google.com/uc?export=download&id=")
    assert find_entry("lightmycells-nucleus").drive_id == "1zcOtPhjpyFd1qU1rYBOwyCuQnoPsx1cJ"


def test_downloads_are_readable_as_the_umask_allows(model_server, tmp_path):
    previous = os.umask(0o022)
    file_mode.cache_clear()
    try:
        path = fetch_model(
            ModelEntry("tiny-nucleus", "Nucleus", url=model_server.url), cache=tmp_path / "cache"
        )
    finally:
        os.umask(previous)
        file_mode.cache_clear()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.with_name(path.name + ".sha256").stat().st_mode) == 0o644


# -- the CLI: --list-models, -m NAME, -m ORGANELLE=PATH -----------------------------------------------------
@pytest.fixture
def image(tmp_path):
    from napari_lightmycells.data.synthetic import make_synthetic_study

    study = make_synthetic_study(tmp_path / "study", n_cases=1, size=96, n_planes=1)
    return next(study.glob("image_*_BF_z0.ome.tiff"))


def test_list_models_shows_the_published_models(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("LIGHTMYCELLS_REGISTRY", raising=False)
    monkeypatch.setenv("LIGHTMYCELLS_CACHE", str(tmp_path / "cache"))
    assert main(["predict", "--list-models"]) == 0
    out = capsys.readouterr().out
    for organelle in ORGANELLES:
        assert f"lightmycells-{organelle.lower()}" in out
    assert out.count("not downloaded") == 4 and "licence:" in out and "Franco-Barranco" in out


def test_predict_by_name_downloads_once_then_runs_offline(model_server, image, tmp_path, monkeypatch, capsys):
    registry = tmp_path / "models.json"
    registry.write_text(
        json.dumps([{"name": "lab-nucleus", "organelle": "Nucleus", "drive_id": model_server.drive_id}])
    )
    monkeypatch.setenv("LIGHTMYCELLS_REGISTRY", str(registry))
    monkeypatch.setenv("LIGHTMYCELLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LIGHTMYCELLS_DRIVE_URL", f"{model_server.base}/uc")
    assert (
        main(["predict", str(image), "-o", str(tmp_path / "a"), "-m", "lab-nucleus", "--tile-size", "64"])
        == 0
    )
    assert len(list((tmp_path / "a").glob("*_Nucleus.ome.tiff"))) == 1
    shown = capsys.readouterr()
    assert f"first copy, {model_server.sha}, is recorded" in shown.out + shown.err  # trust on first use
    monkeypatch.setenv("LIGHTMYCELLS_DRIVE_URL", "http://127.0.0.1:9/offline")
    assert (
        main(["predict", str(image), "-o", str(tmp_path / "b"), "-m", "lab-nucleus", "--tile-size", "64"])
        == 0
    )
    assert len(model_server.requests) == 2 and len(list((tmp_path / "b").glob("*_Nucleus.ome.tiff"))) == 1


def test_model_paths_may_contain_equals_signs(image, tmp_path):
    folder = tmp_path / "run=3"
    folder.mkdir()
    path = save_checkpoint(folder / "best=1.pt", create_model("unetr_tiny"), organelle="Nucleus")
    assert (
        main(["predict", str(image), "-o", str(tmp_path / "a"), "-m", f"Actin={path}", "--tile-size", "64"])
        == 0
    )
    assert len(list((tmp_path / "a").glob("*_Actin.ome.tiff"))) == 1
    assert main(["predict", str(image), "-o", str(tmp_path / "b"), "-m", str(path), "--tile-size", "64"]) == 0
    assert len(list((tmp_path / "b").glob("*_Nucleus.ome.tiff"))) == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("file:///etc/passwd", "Model file not found: file:///etc/passwd"),
        ("/../../x/evil", "Model file not found"),
        ("Golgi=model.pt", "Unknown organelle 'Golgi'"),
        ("Nucleus=no-such-model", "No registered model named 'no-such-model'"),
    ],
)
def test_bad_model_specs_are_one_line_errors(image, tmp_path, capsys, spec, message):
    assert main(["predict", str(image), "-o", str(tmp_path / "out"), "-m", spec]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
