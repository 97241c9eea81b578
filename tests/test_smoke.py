"""Smoke test of a user's install (README: ``pip install -e ".[napari]"``): `.ci/run` also runs it in a
fresh virtual environment holding only that install plus pytest, pytest-qt and pytest-xvfb."""

import importlib
import pkgutil
from importlib import resources

import pytest
import yaml

import napari_lightmycells

MANIFEST = yaml.safe_load(resources.files(napari_lightmycells).joinpath("napari.yaml").read_text())
WIDGETS = [widget["display_name"] for widget in MANIFEST["contributions"]["widgets"]]
MODULES = sorted(
    module.name
    for module in pkgutil.walk_packages(napari_lightmycells.__path__, prefix="napari_lightmycells.")
    if not module.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    assert importlib.import_module(name).__name__ == name


def test_manifest_names_three_docks():
    assert WIDGETS == ["Predict organelles", "Fine-tune organelle model", "Pretrain encoder (MAE)"]


@pytest.mark.parametrize("name", WIDGETS)
def test_dock_opens_in_a_viewer(make_napari_viewer, qtbot, name):
    viewer = make_napari_viewer(show=True)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-lightmycells", name)
    qtbot.waitUntil(dock.isVisible, timeout=5000)
    native = getattr(widget, "native", widget)  # magicgui containers wrap a QWidget
    assert native.isVisible()
    assert native.sizeHint().height() > 100  # the form was built, not an empty panel
