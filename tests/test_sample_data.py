import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import yaml

import napari_lightmycells
from napari_lightmycells._sample_data import real_phase_contrast_case, synthetic_case
from napari_lightmycells.data.focus import best_focus_index
from napari_lightmycells.data.samples import isl_files, load_isl_sample
from napari_lightmycells.errors import DataError


def test_synthetic_case_is_a_bf_stack_and_its_nucleus_target():
    (stack, stack_kwargs, _), (target, target_kwargs, _) = synthetic_case()
    assert stack.shape == (5, 256, 256) and target.shape == (256, 256)
    assert stack_kwargs["name"] == "image_1 BF (z-stack)" and stack_kwargs["metadata"]["modality"] == "BF"
    assert target_kwargs["name"] == "image_1 Nucleus" and target_kwargs["colormap"] == "blue"
    assert stack_kwargs["scale"][1:] == pytest.approx((0.325, 0.325))
    assert best_focus_index(stack) == 2  # sharpest in the middle
    assert np.ptp(target) > 0


@pytest.fixture
def isl_server(real_raw_isl):
    """A local HTTP server on 127.0.0.1 serving ``../shared/data/real-raw/isl`` (the sample's original PNGs);
    ``.url``, ``.requests`` (paths asked for) and ``.folder`` (swap it to serve other bytes)."""
    state = SimpleNamespace(requests=[], folder=real_raw_isl)

    class Handler(SimpleHTTPRequestHandler):
        def translate_path(self, path):
            state.requests.append(path)
            return str(state.folder / Path(unquote(urlsplit(path).path)).name)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/isl/"
    yield state
    server.shutdown()
    server.server_close()


def test_real_sample_is_downloaded_once_checked_and_readable_by_others(isl_server, tmp_path):
    stack, dapi = load_isl_sample(isl_server.url, cache=tmp_path)
    assert stack.shape == (5, 1024, 1024) and stack.dtype == np.uint16
    assert dapi.shape == (1024, 1024) and dapi.dtype == np.uint16 and np.ptp(dapi) > 0
    assert len(isl_server.requests) == 6
    files = sorted((tmp_path / "samples").rglob("*.png"))
    assert [f.name for f in files] == sorted(isl_files()) and all(f.stat().st_mode & 0o044 for f in files)
    again, _ = load_isl_sample(isl_server.url, cache=tmp_path)
    assert len(isl_server.requests) == 6 and np.array_equal(again, stack)  # served from the cache


def test_real_sample_with_wrong_bytes_is_refused_and_not_kept(isl_server, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    for name in isl_files():
        (fake / name).write_bytes(b"not the published image")
    isl_server.folder = fake
    with pytest.raises(DataError, match="Could not download the real sample") as error:
        load_isl_sample(isl_server.url, cache=tmp_path / "cache")
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "cache").rglob("*.png"))


def test_offline_real_sample_is_a_one_line_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DataError, match="check the connection") as error:
        load_isl_sample(f"http://127.0.0.1:{port}/", cache=tmp_path)
    assert "\n" not in str(error.value)


def test_napari_real_sample_gives_the_stack_and_dapi_with_the_citation(
    isl_server, tmp_path, monkeypatch, notifications
):
    monkeypatch.setenv("LIGHTMYCELLS_SAMPLE_URL", isl_server.url)
    monkeypatch.setenv("LIGHTMYCELLS_CACHE", str(tmp_path))
    (stack, stack_kwargs, kind), (dapi, dapi_kwargs, _) = real_phase_contrast_case()
    assert kind == "image" and stack.shape == (5, 1024, 1024) and dapi.shape == (1024, 1024)
    assert stack_kwargs["metadata"]["modality"] == "PC" and dapi_kwargs["colormap"] == "blue"
    assert "Christiansen" in stack_kwargs["metadata"]["source"]
    assert any("Christiansen" in str(n.message) for n in notifications)
    manifest = yaml.safe_load((Path(napari_lightmycells.__file__).parent / "napari.yaml").read_text())
    samples = {s["key"]: s["command"] for s in manifest["contributions"]["sample_data"]}
    assert samples["real_phase_contrast_case"] == "napari-lightmycells.real_phase_contrast_case"
