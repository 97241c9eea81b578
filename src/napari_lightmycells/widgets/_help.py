"""What each field of the widgets means: shown as its tooltip, and the README's widget guide quotes it.

Keys are the fields' labels (or the text of check boxes and buttons) as the widgets show them.
"""

from __future__ import annotations

from magicgui.widgets import Container, Widget

PREDICT = {
    "image": "The transmitted-light image layer to predict from: a 2D image or a Z-stack (ZYX).",
    "modality": "How the image was taken: BF (brightfield), PC (phase contrast) or DIC. A public model "
    "trained on another modality gives a warning; it is also written into the output layers' metadata.",
    "Z plane": "For a Z-stack: the best-focused plane (least blurry), one plane by its index, "
    "or every plane (a Z-stack of predictions).",
    "plane index": "The plane used when Z plane is 'plane index' (0 is the first).",
    "organelles": "Tick the organelles to predict; for each, a public model (downloaded once, "
    "checked by SHA-256) or 'checkpoint file': one of ours, BiaPy's, or a bioimage.io package (.zip).",
    "device": "Where the models run: auto picks CUDA, then Apple MPS, then the CPU.",
    "precision": "auto: bf16 on CUDA, fp32 elsewhere. bf16 is about twice as fast on CPUs with "
    "AVX512-BF16/AMX, with a small loss of accuracy.",
    "tile size (px)": "Images are predicted in square tiles of this side; 0 uses the size the model was "
    "trained on (best quality). Smaller tiles need less memory.",
    "tile overlap": "Fraction of a tile shared with its neighbours (0 to 0.5), blended smoothly so that "
    "no seams show. The default, 0.391, is BiaPy's context (200 px on each side of a 1024 px tile); 0.125 "
    "computes about half as much on large images, at a small cost in quality.",
    "tiles per batch": "Tiles computed together: more is faster on a GPU and needs more memory. "
    "Out of memory halves it, then the tile size, and retries.",
    "Release models": "Free the memory of the models kept loaded between predictions.",
    "export to": "bioimage.io package (.zip) to write for the ticked organelle's model "
    "(several ticked: one file each, named after the organelle).",
}

TRAINING = {
    "training data": "Image layers open in napari, or a study folder on disk (LightMyCells or simple "
    "layout, see 'Training on your own data').",
    "study folder": "Folder of training images (`lightmycells study FOLDER` tells what it holds).",
    "epochs": "Passes over the training images; the run can be stopped at any time and resumed.",
    "batch size": "Crops per optimiser step: more uses more memory.",
    "crop size (px)": "Side of the random square crops the model trains on (a multiple of 32); images "
    "smaller than a crop are mirror padded.",
    "learning rate": "Peak AdamW learning rate, reached after the warm-up and then decayed (cosine).",
    "seed": "Random seed of the crops, augmentation and validation split: the same seed repeats a run.",
    "preview every (epochs)": "Show the current model's output as a layer every N epochs (0: never).",
    "loader workers": "Processes preparing training crops in parallel (0: in the training process).",
    "device": "Where training runs: auto picks CUDA, then Apple MPS, then the CPU.",
    "output folder": "Where config.yaml, best.pt and last.pt are written; a folder holding an earlier "
    "run is never overwritten (the new run goes to FOLDER-2).",
    "resume from output/last.pt": "Continue the stopped run of the output folder from its last.pt.",
}

FINETUNE = {
    **TRAINING,
    "layer pairs": "Pairs of layers: the transmitted-light input and its fluorescence target, "
    "of the same height and width (+ pair / − pair add and remove rows).",
    "input": "Transmitted-light layer of a pair (2D or Z-stack).",
    "target": "Fluorescence layer of the organelle, same height and width as the input.",
    "modality": "Modality of the input layers: BF, PC or DIC.",
    "organelle": "The organelle the model learns to predict.",
    "model preset": "Network size: unetr_paper is the paper's (ViT-B encoder, best with a GPU); "
    "unetr_small and unetr_tiny train on a CPU.",
    "start from": "A pretrained checkpoint for the encoder (MAE, UNETR or BiaPy's); empty: from scratch.",
    "augmentation": "Random rotations, flips, elastic deformation, brightness/contrast and GridMask "
    "on every crop.",
    "validation fraction": "Share of the images kept apart to measure validation loss, PSNR, SSIM and "
    "Pearson (best.pt is the best validation loss).",
    "patches per image": "Random training crops drawn from each image per epoch.",
}

PRETRAIN = {
    **TRAINING,
    "image layers": "The unlabelled transmitted-light layers to pretrain on (select several).",
    "modality": "Modality of the image layers: BF, PC or DIC.",
    "MAE preset": "Size of the masked autoencoder; its encoder fits the UNETR preset of the same size "
    "(mae_small: unetr_small, mae_paper: unetr_paper).",
}


def add_tooltips(container: Container, help_texts: dict[str, str]) -> None:
    """Give every field of ``container`` (nested containers included) its text from ``help_texts``."""
    for widget in container:
        text = help_texts.get(field_name(widget))
        if text:
            widget.tooltip = text
        if isinstance(widget, Container):
            add_tooltips(widget, help_texts)


def field_name(widget: Widget) -> str:
    """The name a user sees: a field's label, or a check box's or button's text."""
    return widget.label or getattr(widget, "text", "") or ""
