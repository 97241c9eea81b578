"""napari-lightmycells: fluorescence organelles from label-free microscopy with self-supervised UNETRs."""

__version__ = "0.1.0"
