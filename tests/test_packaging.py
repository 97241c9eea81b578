"""The wheel ships the napari manifest, the model registry and the training presets."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_wheel_contains_manifest_registry_and_presets(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("napari_lightmycells-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    manifest = zipfile.ZipFile(wheel).read("napari_lightmycells/napari.yaml").decode()
    assert manifest == (ROOT / "napari.yaml").read_text()  # the top-level manifest, not a dangling link
    assert "napari_lightmycells/registry.json" in names
    assert "napari_lightmycells/configs/nucleus.yaml" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "napari-lightmycells = napari_lightmycells:napari.yaml" in text
    assert "lightmycells = napari_lightmycells.cli:main" in text


def test_npe2_validate_command_passes():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-lightmycells"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()
