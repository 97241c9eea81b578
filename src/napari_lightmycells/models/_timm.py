"""The timm pieces the models use, imported without the warning timm's import gives on recent torch.

timm 1.0 applies ``torch.jit.interface`` at import time, which torch >= 2.10 reports with a
``FutureWarning`` that users can do nothing about; it is silenced here only, for this import.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="`torch.jit.interface` is deprecated", category=FutureWarning)
    from timm.layers import PatchEmbed, resample_abs_pos_embed
    from timm.models.vision_transformer import Block

__all__ = ["Block", "PatchEmbed", "resample_abs_pos_embed"]
