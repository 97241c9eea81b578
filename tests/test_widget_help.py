"""Every field of the three docks explains itself in a tooltip, with the text of the README's widget guide."""

from pathlib import Path

import pytest
from magicgui.widgets import Container, PushButton

from napari_lightmycells.constants import ORGANELLES
from napari_lightmycells.widgets._help import FINETUNE, PREDICT, PRETRAIN, field_name

README = (Path(__file__).parent.parent / "README.md").read_text()
DOCKS = {
    "Predict organelles": PREDICT,
    "Fine-tune organelle model": FINETUNE,
    "Pretrain encoder (MAE)": PRETRAIN,
}


def named_widgets(container: Container):
    for widget in container:
        if field_name(widget) and field_name(widget) not in ORGANELLES:  # organelle rows have their own
            yield widget
        if isinstance(widget, Container):
            yield from named_widgets(widget)


@pytest.mark.parametrize("dock", DOCKS)
def test_every_field_has_its_guide_text_as_tooltip(make_napari_viewer, dock):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-lightmycells", dock)
    texts = DOCKS[dock]
    widgets = list(named_widgets(widget))
    fields = {field_name(w): w.tooltip for w in widgets if not isinstance(w, PushButton)}
    assert fields == {name: texts.get(name) for name in fields}  # every field has its text
    assert set(texts) <= {field_name(w) for w in widgets}  # and no text describes a field that is gone
    for button in (w for w in widgets if isinstance(w, PushButton) and field_name(w) in texts):
        assert button.tooltip == texts[field_name(button)]


@pytest.mark.parametrize("dock", DOCKS)
def test_the_readme_guide_quotes_every_tooltip(dock):
    for name, text in DOCKS[dock].items():
        assert f"| **{name}** | {text} |" in README, name
