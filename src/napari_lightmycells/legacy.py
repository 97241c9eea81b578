"""Field names of earlier versions, still accepted when reading their configs and checkpoints.

``patch_size`` used to mean both the training crop (now ``crop_size``) and the ViT token
(now ``token_size``); ``img_size`` was the encoder's crop size.
"""

from __future__ import annotations

from typing import Any

RUN_CONFIG_RENAMES = {"patch_size": "crop_size"}
ENCODER_RENAMES = {"img_size": "crop_size", "patch_size": "token_size"}


def renamed(data: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    """``data`` with old keys replaced by their new names (a new key given too wins)."""
    data = dict(data)
    for old, new in renames.items():
        if old in data:
            value = data.pop(old)
            data.setdefault(new, value)
    return data
