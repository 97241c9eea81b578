"""Packaging: the wheel ships the manifest, registry and presets; every imported package is declared."""

import ast
import re
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import napari_lightmycells

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "src" / "napari_lightmycells"
# Modules napari loads; they may import what the `napari` extra installs.
NAPARI_MODULES = ("widgets/", "_reader.py", "_writer.py", "_sample_data.py")


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalize(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]) for requirement in requirements}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_packages(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names imported at module level and inside functions (relative imports left out)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_level = {id(node) for node in tree.body}
    eager, lazy = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module]
        else:
            continue
        (eager if id(node) in module_level else lazy).update(name.split(".")[0] for name in names)
    return eager, lazy


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_imported_package_is_declared(project):
    core = requirement_names(project["dependencies"])
    extras = {name: requirement_names(reqs) for name, reqs in project["optional-dependencies"].items()}
    anywhere = core.union(*extras.values())
    providers = packages_distributions()
    undeclared = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        allowed = core | extras["napari"] if relative.startswith(NAPARI_MODULES) else core
        eager, lazy = imported_packages(path)
        for names, declared in ((eager, allowed), (lazy, anywhere)):
            for name in sorted(names - set(sys.stdlib_module_names) - {"napari_lightmycells"}):
                dists = {normalize(dist) for dist in providers.get(name, [name])}
                if not dists & declared:
                    undeclared.append(f"{relative}: {name} ({', '.join(sorted(dists))})")
    assert not undeclared, "imported but not declared in pyproject.toml:\n" + "\n".join(undeclared)


def test_version_is_defined_once(project):
    assert "version" not in project and "version" in project["dynamic"]  # the wheel test checks its value
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", napari_lightmycells.__version__)


def test_manifest_is_a_real_file_in_the_package():
    manifest = PACKAGE / "napari.yaml"
    assert manifest.is_file() and not manifest.is_symlink()
    assert not (ROOT / "napari.yaml").exists()


@pytest.mark.slow
def test_wheel_contains_manifest_registry_and_presets(tmp_path):
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip_wheel, "-w", str(tmp_path), str(ROOT)], check=True)
    (wheel,) = tmp_path.glob("napari_lightmycells-*.whl")
    assert wheel.name.startswith(f"napari_lightmycells-{napari_lightmycells.__version__}-")
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    manifest = archive.read("napari_lightmycells/napari.yaml").decode()
    assert manifest == (PACKAGE / "napari.yaml").read_text()
    assert "napari_lightmycells/registry.json" in names
    assert "napari_lightmycells/configs/nucleus.yaml" in names
    metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"Version: {napari_lightmycells.__version__}\n" in metadata
    assert "Requires-Dist: matplotlib" in metadata
    entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "napari-lightmycells = napari_lightmycells:napari.yaml" in entry_points
    assert "lightmycells = napari_lightmycells.cli:main" in entry_points


def test_npe2_validate_command_passes():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-lightmycells"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()
