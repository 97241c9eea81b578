import hashlib
import http.server
import json
import threading
from functools import partial

import pytest
import torch

from napari_lightmycells.checkpoint import save_checkpoint
from napari_lightmycells.loading import load_model
from napari_lightmycells.errors import ModelError
from napari_lightmycells.hub import ModelEntry, fetch_model, find_entry, known_models
from napari_lightmycells.models import create_model


@pytest.fixture
def served(tmp_path):
    """A checkpoint served over HTTP on 127.0.0.1, with a request counter."""
    root = tmp_path / "server"
    root.mkdir()
    path = save_checkpoint(root / "nucleus.pt", create_model("unetr_tiny"), organelle="Nucleus")
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/nucleus.pt"
    yield url, hashlib.sha256(path.read_bytes()).hexdigest(), requests
    server.shutdown()
    server.server_close()


def test_download_verifies_checksum_and_caches(served, tmp_path):
    url, sha, requests = served
    entry = ModelEntry("tiny-nucleus", "Nucleus", url, sha)
    seen = []
    path = fetch_model(
        entry, cache=tmp_path / "cache", progress=lambda done, total: seen.append((done, total))
    )
    _, card = load_model(path)
    assert card.organelle == "Nucleus"
    assert seen and seen[-1][0] == seen[-1][1] == path.stat().st_size
    again = fetch_model(entry, cache=tmp_path / "cache")
    assert again == path and len(requests) == 1  # second call served from the cache


def test_checksum_mismatch_keeps_nothing(served, tmp_path):
    url, _, _ = served
    entry = ModelEntry("tiny-nucleus", "Nucleus", url, "0" * 64)
    with pytest.raises(ModelError, match="corrupt or the file changed"):
        fetch_model(entry, cache=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    entry = ModelEntry("gone", "Nucleus", "http://127.0.0.1:9/missing.pt", "0" * 64)
    with pytest.raises(ModelError, match="Could not download gone"):
        fetch_model(entry, cache=tmp_path)


def test_user_registry_file_extends_known_models(tmp_path, monkeypatch, served):
    url, sha, _ = served
    registry = tmp_path / "models.json"
    registry.write_text(
        json.dumps(
            [{"name": "lab-nucleus", "organelle": "Nucleus", "url": url, "sha256": sha, "modality": ["BF"]}]
        )
    )
    monkeypatch.setenv("LIGHTMYCELLS_REGISTRY", str(registry))
    monkeypatch.setenv("LIGHTMYCELLS_CACHE", str(tmp_path / "cache"))
    assert find_entry("lab-nucleus").modality == ("BF",)
    assert known_models()[-1].name == "lab-nucleus"
    assert fetch_model("lab-nucleus").parent == tmp_path / "cache"
    registry.write_text("{not json")
    with pytest.raises(ModelError, match="not a valid list"):
        known_models()
    with pytest.raises(ModelError, match="No registered model"):
        monkeypatch.delenv("LIGHTMYCELLS_REGISTRY")
        find_entry("lab-nucleus")


def test_file_urls_work_for_local_mirrors(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("unetr_tiny"))
    entry = ModelEntry("local", "Actin", path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest())
    fetched = fetch_model(entry, cache=tmp_path / "cache")
    assert torch.equal(
        torch.load(fetched, weights_only=True)["state_dict"]["encoder.cls_token"],
        torch.load(path, weights_only=True)["state_dict"]["encoder.cls_token"],
    )


def test_downloads_honour_the_umask(served, tmp_path):
    import os
    import stat

    from napari_lightmycells.files import file_mode

    url, sha, _ = served
    previous = os.umask(0o022)
    file_mode.cache_clear()
    try:
        path = fetch_model(ModelEntry("tiny-nucleus", "Nucleus", url, sha), cache=tmp_path / "cache")
    finally:
        os.umask(previous)
        file_mode.cache_clear()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
