"""Vocabulary of the LightMyCells challenge: organelles and transmitted-light modalities."""

ORGANELLES = ("Nucleus", "Mitochondria", "Tubulin", "Actin")
MODALITIES = ("BF", "PC", "DIC")

# The challenge's percentile normalisation, (x - p2) / (p99.8 - p2) per image (its evaluation code and
# the organisers' percentile_normalization(pmin=2, pmax=99.8)); used for metrics, the "percentile"
# input normalisation, bioimage.io scale_range and display contrast alike.
CHALLENGE_PERCENTILES = (2.0, 99.8)

# Display colours used by the napari layers (one per organelle).
ORGANELLE_COLORMAPS = {
    "Nucleus": "blue",
    "Mitochondria": "magenta",
    "Tubulin": "green",
    "Actin": "red",
}


def canonical_organelle(name: str) -> str:
    """Return the canonical spelling of an organelle name, case-insensitively."""
    for organelle in ORGANELLES:
        if name.lower() in (organelle.lower(), organelle.lower()[:4]):
            return organelle
    raise ValueError(f"Unknown organelle {name!r}: expected one of {', '.join(ORGANELLES)}.")


def canonical_modality(name: str) -> str:
    """Return the canonical spelling of a modality name (BF, PC, DIC), case-insensitively."""
    aliases = {"brightfield": "BF", "phase": "PC", "phasecontrast": "PC", "phase_contrast": "PC"}
    key = name.strip()
    if key.upper() in MODALITIES:
        return key.upper()
    if key.lower() in aliases:
        return aliases[key.lower()]
    raise ValueError(f"Unknown modality {name!r}: expected one of {', '.join(MODALITIES)}.")
