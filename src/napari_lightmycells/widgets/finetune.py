"""The Fine-tune widget: train a UNETR for one organelle from image layers or a study folder.

The run panel (:class:`TrainingWidget`) is shared with the Pretrain widget; a finished model is handed
to a docked Predict widget.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import napari
import numpy as np
import torch  # noqa: F401  (imported before Qt, as torch requires on some platforms)
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_info

from ..constants import MODALITIES, ORGANELLES
from ..data.io import write_ome_tiff
from ..errors import DataError
from ..models import UNETR_PRESETS
from ..training.config import TrainConfig
from ._help import FINETUNE, add_tooltips
from ._training import (
    CHECKPOINT_FILTER,
    FOLDER,
    LAYERS,
    LAYERS_STUDY,
    TrainingWidget,
    image_layers,
    plain_layer_data,
)


class PairRow(Container):
    """One training pair: a transmitted-light layer and the fluorescence layer it should predict."""

    def __init__(self, viewer: napari.Viewer):
        self.input = ComboBox(
            label="input", choices=lambda _: image_layers(viewer), tooltip="Transmitted light"
        )
        self.target = ComboBox(label="target", choices=lambda _: image_layers(viewer), tooltip="Fluorescence")
        super().__init__(widgets=[self.input, self.target], layout="horizontal", labels=False)
        add_tooltips(self, FINETUNE)
        self.margins = (0, 0, 0, 0)


class FinetuneWidget(TrainingWidget):
    """Fine-tune a UNETR to predict one organelle from image layer pairs or a study folder."""

    help_texts = FINETUNE

    def __init__(self, napari_viewer: napari.Viewer, mode: str = "process"):
        self.source = ComboBox(label="training data", choices=(LAYERS, FOLDER))
        self.pairs = Container(label="layer pairs", widgets=[PairRow(napari_viewer)], labels=False)
        self.pairs.margins = (0, 0, 0, 0)
        self.add_pair = PushButton(text="+ pair")
        self.remove_pair = PushButton(text="− pair")
        pair_buttons = Container(widgets=[self.add_pair, self.remove_pair], layout="horizontal", labels=False)
        pair_buttons.margins = (0, 0, 0, 0)
        self.modality = ComboBox(label="modality", choices=MODALITIES, tooltip="Modality of the input layers")
        self.folder = FileEdit(label="study folder", mode="d", visible=False)
        self.organelle = ComboBox(label="organelle", choices=ORGANELLES)
        self.model = ComboBox(label="model preset", choices=list(UNETR_PRESETS), value="unetr_small")
        self.init = FileEdit(
            label="start from",
            mode="r",
            filter=CHECKPOINT_FILTER,
            nullable=True,
            tooltip="Pretrained UNETR or MAE checkpoint for the encoder; empty: train from scratch",
        )
        self.augment = CheckBox(text="augmentation", value=True)
        self.val_fraction = FloatSpinBox(label="validation fraction", min=0.0, max=0.9, step=0.05, value=0.1)
        self.samples = SpinBox(
            label="patches per image",
            min=1,
            max=10_000,
            value=8,
            tooltip="Random training patches drawn from each image in an epoch",
        )
        super().__init__(
            napari_viewer,
            [
                self.source,
                self.pairs,
                pair_buttons,
                self.modality,
                self.folder,
                self.organelle,
                self.model,
                self.init,
                self.augment,
                self.val_fraction,
                self.samples,
            ],
            mode,
        )
        self._layer_widgets = [self.pairs, pair_buttons, self.modality]
        self.source.changed.connect(self._on_source_changed)
        self.add_pair.clicked.connect(lambda: self.pairs.append(PairRow(self.viewer)))
        self.remove_pair.clicked.connect(self._remove_pair)
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)

    def _on_source_changed(self, source: str) -> None:
        for widget in self._layer_widgets:
            widget.visible = source == LAYERS
        self.folder.visible = source == FOLDER

    def _remove_pair(self) -> None:
        if len(self.pairs) > 1:
            self.pairs.pop()

    def _refresh_layers(self, _=None) -> None:
        for row in self.pairs:
            row.input.reset_choices()
            row.target.reset_choices()

    def make_config(self) -> TrainConfig:
        data = self.write_layer_study() if self.source.value == LAYERS else self._study_folder()
        return TrainConfig(
            data=str(data),
            organelle=self.organelle.value,
            model=self.model.value,
            init_encoder=str(self.init.value) if self.init.value else None,
            augment={"enabled": self.augment.value},
            val_fraction=self.val_fraction.value,
            samples_per_case=self.samples.value,
            patience=None,
            **self.common_settings(),
        ).replace()

    def _study_folder(self) -> Path:
        folder = self.folder.value
        if folder is None or not Path(folder).is_dir():
            raise DataError(
                "No study folder chosen: pick a folder in the LightMyCells or inputs/targets layout."
            )
        return Path(folder)

    def write_layer_study(self) -> Path:
        """Write the layer pairs as ``<output>/layers_study`` (``inputs/`` + ``targets/<organelle>/``)."""
        pairs = [
            (plain_layer_data(row.input.value, "input"), plain_layer_data(row.target.value, "target"))
            for row in self.pairs
        ]
        for index, (image, target) in enumerate(pairs, 1):
            if target.ndim == 3 and target.shape[0] == 1:
                pairs[index - 1] = (image, target[0])
            elif target.ndim != 2:
                raise DataError(f"Target of pair {index} must be a 2D image, got shape {target.shape}.")
            if image.shape[-2:] != target.shape[-2:]:
                raise DataError(
                    f"Pair {index}: input {image.shape[-2:]} and target {target.shape} differ in size."
                )
        root = Path(self.output.value) / LAYERS_STUDY
        shutil.rmtree(root, ignore_errors=True)
        for index, (image, target) in enumerate(pairs, 1):
            name = f"pair{index}_{self.modality.value}.ome.tiff"
            write_ome_tiff(root / "inputs" / name, image, modality=self.modality.value, dtype=np.float32)
            write_ome_tiff(root / "targets" / self.organelle.value / name, target, dtype=np.float32)
        return root

    def on_trained(self, path: Path, config: TrainConfig) -> None:
        """Select the model in docked Predict widgets (for its organelle) and say where it is."""
        from .predict import CHECKPOINT_FILE, PredictWidget

        organelle = config.organelle
        docked = [w for w in self.viewer.window.dock_widgets.values() if isinstance(w, PredictWidget)]
        for predict in docked:
            row = predict.rows[organelle]
            row.source.value = CHECKPOINT_FILE
            row.file.value = path
            row.selected.value = True
        where = " and selected in the Predict widget" if docked else ""
        show_info(f"{organelle} model saved to {path}{where}.")
