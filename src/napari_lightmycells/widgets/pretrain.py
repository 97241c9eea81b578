"""The Pretrain widget: MAE self-supervised pretraining of the encoder on unlabelled transmitted-light images.

Same background run panel as the Fine-tune widget; previews show the masked input and its
reconstruction. The encoder is then offered to a docked Fine-tune widget as its starting point.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import napari
import numpy as np
import torch  # noqa: F401  (imported before Qt, as torch requires on some platforms)
from magicgui.widgets import ComboBox, FileEdit, Select
from napari.utils.notifications import show_info

from ..constants import MODALITIES
from ..data.io import write_ome_tiff
from ..errors import DataError
from ..models import MAE_PRESETS, UNETR_PRESETS
from ..training.config import PretrainConfig
from ._help import PRETRAIN
from ._training import FOLDER, LAYERS, LAYERS_STUDY, TrainingWidget, image_layers, plain_layer_data
from .finetune import FinetuneWidget


class PretrainWidget(TrainingWidget):
    """Pretrain an MAE encoder from image layers or the inputs of a study folder."""

    task = "pretrain"
    action = "Pretraining"
    config_class = PretrainConfig
    plots_psnr = False
    help_texts = PRETRAIN

    def __init__(self, napari_viewer: napari.Viewer, mode: str = "process"):
        self.source = ComboBox(label="training data", choices=(LAYERS, FOLDER))
        self.layers = Select(label="image layers", choices=lambda _: image_layers(napari_viewer))
        self.modality = ComboBox(label="modality", choices=MODALITIES, tooltip="Modality of the image layers")
        self.folder = FileEdit(label="study folder", mode="d", visible=False)
        self.model = ComboBox(label="MAE preset", choices=list(MAE_PRESETS), value="mae_small")
        super().__init__(
            napari_viewer, [self.source, self.layers, self.modality, self.folder, self.model], mode
        )
        self.source.changed.connect(self._on_source_changed)
        napari_viewer.layers.events.inserted.connect(self.layers.reset_choices)
        napari_viewer.layers.events.removed.connect(self.layers.reset_choices)

    def _on_source_changed(self, source: str) -> None:
        self.layers.visible = self.modality.visible = source == LAYERS
        self.folder.visible = source == FOLDER

    def make_config(self) -> PretrainConfig:
        data = self.write_layer_study() if self.source.value == LAYERS else self._study_folder()
        return PretrainConfig(data=str(data), model=self.model.value, **self.common_settings()).replace()

    def _study_folder(self) -> Path:
        folder = self.folder.value
        if folder is None or not Path(folder).is_dir():
            raise DataError(
                "No study folder chosen: pick a folder of transmitted-light images (inputs/ or LightMyCells)."
            )
        return Path(folder)

    def write_layer_study(self) -> Path:
        """Write the chosen layers as ``<output>/layers_study/inputs``."""
        if not self.layers.value:
            raise DataError("No image layers chosen: select the transmitted-light layers to pretrain on.")
        images = [plain_layer_data(layer, "image") for layer in self.layers.value]
        root = Path(self.output.value) / LAYERS_STUDY
        shutil.rmtree(root, ignore_errors=True)
        for index, image in enumerate(images, 1):
            path = root / "inputs" / f"image{index}_{self.modality.value}.ome.tiff"
            write_ome_tiff(path, image, modality=self.modality.value, dtype=np.float32)
        return root

    def on_trained(self, path: Path, config: PretrainConfig) -> None:
        """Offer the encoder (and the UNETR preset it fits) to docked Fine-tune widgets as their starting point."""
        docked = [w for w in self.viewer.window.dock_widgets.values() if isinstance(w, FinetuneWidget)]
        encoder = MAE_PRESETS[config.model].encoder
        presets = [name for name, preset in UNETR_PRESETS.items() if preset.encoder == encoder]
        for finetune in docked:
            finetune.init.value = path
            if presets:
                finetune.model.value = presets[0]
        where = " and set as 'start from' in the Fine-tune widget" if docked else ""
        show_info(f"MAE encoder saved to {path}{where}.")
