"""The core (models, data, training, inference, metrics, checkpoints, CLI) never imports Qt or napari."""

import subprocess
import sys

CORE_MODULES = [
    "napari_lightmycells.cli",
    "napari_lightmycells.inference.predictor",
    "napari_lightmycells.training.finetune",
    "napari_lightmycells.training.pretrain",
    "napari_lightmycells.background",
    "napari_lightmycells.evaluate",
    "napari_lightmycells.hub",
    "napari_lightmycells.model_zoo",
]
GUI_PREFIXES = ("napari.", "qtpy", "PyQt5", "PyQt6", "PySide", "magicgui", "superqt", "vispy")


def test_core_modules_import_no_gui_toolkit():
    code = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in CORE_MODULES)
        + f"print(sorted(m for m in sys.modules if m == 'napari' or m.startswith({GUI_PREFIXES!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
