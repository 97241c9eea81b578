"""Shared fixtures: a tiny organelle checkpoint, a small synthetic LightMyCells study, the real studies, a
tiny model fine-tuned on a real crop and a local model download server."""

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections import namedtuple
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

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
        result = finetune(config.model_copy(update={"patience": None}))
    finally:
        torch.set_num_threads(threads)
    rows, columns = REAL_HELD_OUT_REGION
    planes = [read_image(plane.path).data[rows, columns] for plane in case.planes()]
    target = read_image(case.targets["Nucleus"]).data[rows, columns]
    return SimpleNamespace(checkpoint=result.last_path, planes=planes, target=target, steps=result.step)


DRIVE_ID = "1aBcDeFgHiJkLmNoP_-q"
CHUNK = 1 << 20
Server = namedtuple("Server", "base url sha requests size release drive_id")


def confirmation_page(base: str) -> bytes:
    """Google Drive's answer for a file too large to scan, as one line (gdown parses the form)."""
    return (
        "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
        "<p>Google Drive can't scan this file for viruses.</p>"
        f'<form id="download-form" action="{base}/download" method="get">'
        '<input type="submit" value="Download anyway"/>'
        f'<input type="hidden" name="id" value="{DRIVE_ID}"><input type="hidden" name="export" value="download">'
        '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="1234-abcd"></form>'
        "</body></html>\n"
    ).encode()


@pytest.fixture
def model_server(tmp_path):
    """A local HTTP server on 127.0.0.1 for download tests (never the internet). Serves a tiny Nucleus
    checkpoint as ``/files/nucleus.pt`` and through a Google Drive look-alike: ``/uc?id=DRIVE_ID`` answers
    with Drive's confirmation page for large files, whose form leads to ``/download`` (``/uc-small``: the
    file at once, ``/uc-quota``: Drive's error page). ``/slow`` sends 1 MiB, then the rest (3 MiB in all)
    once ``release`` is set. ``requests`` lists the paths asked for."""
    root = tmp_path / "server"
    root.mkdir()
    path = save_checkpoint(root / "nucleus.pt", create_model("unetr_tiny"), organelle="Nucleus")
    data = path.read_bytes()
    requests = []
    release = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if parts.path == "/uc" and query.get("id") == [DRIVE_ID]:
                self.reply(confirmation_page(base), "text/html; charset=utf-8")
            elif parts.path == "/uc-small" and query.get("id") == [DRIVE_ID]:
                self.reply(data, "application/octet-stream")
            elif parts.path == "/uc-quota":
                page = '<html><body><p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently.</p></body></html>'
                self.reply(page.encode(), "text/html")
            elif (
                parts.path == "/download"
                and query.get("confirm") == ["t"]
                and query.get("uuid") == ["1234-abcd"]
            ):
                self.reply(data, "application/octet-stream")
            elif parts.path == "/slow":
                self.send_response(200)
                self.send_header("Content-Length", str(3 * CHUNK))
                self.end_headers()
                self.wfile.write(bytes(CHUNK))
                self.wfile.flush()
                release.wait(timeout=30)
                self.wfile.write(bytes(2 * CHUNK))
            elif parts.path.startswith("/files/"):
                self.path = parts.path[len("/files") :]
                super().do_GET()
            else:
                self.send_error(404)

        def reply(self, body: bytes, content_type: str):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class QuietServer(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # a client that hung up: a cancelled download

    httpd = QuietServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield Server(
        base,
        f"{base}/files/nucleus.pt",
        hashlib.sha256(data).hexdigest(),
        requests,
        len(data),
        release,
        DRIVE_ID,
    )
    release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def torchrun():
    """Runs ``torchrun --standalone --nproc_per_node N -m napari_lightmycells.cli ARGS``."""
    return run_torchrun


def run_torchrun(*cli_args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """The CLI under ``torchrun`` with one torch thread per process (4 minutes at most); returns the
    finished process with its captured output."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*command, "-m", "napari_lightmycells.cli", *cli_args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
