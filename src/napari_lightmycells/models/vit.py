"""ViT encoder shared by :class:`UNETR2D` and :class:`MAE2D`, built from timm blocks.

Tokens are ``token_size``² pixel squares embedded by a strided convolution; a class token is
prepended and fixed 2D sin-cos positional embeddings are added (stored in the state dict, so
weights trained elsewhere, e.g. by BiaPy, load unchanged). Inputs whose sides are any multiple of
the token size are accepted: the positional embedding grid is resampled to the input's grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError
from ..legacy import ENCODER_RENAMES, renamed
from ._timm import Block, PatchEmbed, resample_abs_pos_embed


@dataclass(frozen=True)
class ViTConfig:
    """Encoder hyper-parameters (the paper: 768 / 12 layers / 12 heads / 32-pixel tokens)."""

    in_channels: int = 1
    crop_size: int = 1024  # side of the training crops, pixels (sets the stored positional grid)
    token_size: int = 32  # side of a token, pixels
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0

    @property
    def grid_size(self) -> int:
        return self.crop_size // self.token_size

    @classmethod
    def from_dict(cls, data: dict) -> ViTConfig:
        """From a stored dict, including those written with the old names ``img_size``/``patch_size``."""
        return cls(**renamed(data, ENCODER_RENAMES))


def sincos_pos_embed(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2D sin-cos embedding of shape ``(1, 1 + grid_size², embed_dim)`` (zeros for the class token)."""
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for 2D sin-cos embeddings, got {embed_dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float64) / (embed_dim / 4))

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(grid_y), encode(grid_x)], dim=1)
    table = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64), table], dim=0)
    return table.unsqueeze(0).float()


def pos_embed_for_grid(pos_embed: torch.Tensor, stored: int, grid: tuple[int, int]) -> torch.Tensor:
    """A ``stored``x``stored`` positional embedding (plus class token) resampled bicubically to ``grid``."""
    if grid == (stored, stored):
        return pos_embed
    return resample_abs_pos_embed(
        pos_embed, new_size=list(grid), old_size=[stored, stored], num_prefix_tokens=1
    )


class ViTEncoder(nn.Module):
    """Patch embedding + class token + positional embedding + timm transformer blocks."""

    num_prefix_tokens = 1

    def __init__(self, config: ViTConfig):
        super().__init__()
        if config.crop_size % config.token_size:
            raise ValueError(
                f"crop_size {config.crop_size} is not a multiple of token_size {config.token_size}"
            )
        self.config = config
        self.token_size = config.token_size
        self.patch_embed = PatchEmbed(
            img_size=config.crop_size,
            patch_size=config.token_size,
            in_chans=config.in_channels,
            embed_dim=config.embed_dim,
            strict_img_size=False,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_embed = nn.Parameter(
            sincos_pos_embed(config.embed_dim, config.grid_size), requires_grad=False
        )
        drop_path = torch.linspace(0, config.drop_path_rate, config.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, config.num_heads, config.mlp_ratio, qkv_bias=True, drop_path=dp)
            for dp in drop_path
        )
        for block in self.blocks:
            block.attn.fused_attn = True  # scaled_dot_product_attention (flash / memory-efficient kernels)
        self._init_weights()

    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def grid_of(self, x: torch.Tensor) -> tuple[int, int]:
        """Token grid ``(rows, cols)`` for an input batch; raises if a side is not a multiple of the token."""
        if x.ndim != 4:
            raise DataError(f"Expected a (batch, channels, height, width) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        p = self.token_size
        if h % p or w % p or h == 0 or w == 0:
            raise DataError(
                f"Input of {h}x{w} pixels is not a multiple of the {p}-pixel token size; "
                "pad it (the predictor does this automatically)."
            )
        return h // p, w // p

    def pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        return pos_embed_for_grid(self.pos_embed, self.config.grid_size, grid)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Return ``(class token, patch tokens, grid)``, positional embedding included."""
        grid = self.grid_of(x)
        tokens = self.patch_embed(x)
        pos = self.pos_embed_for(grid).to(tokens.dtype)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1) + pos[:, :1]
        return cls, tokens + pos[:, 1:], grid

    def load_state_dict_resampled(self, state: dict[str, torch.Tensor], strict: bool = True):
        """Load encoder weights, resampling a positional embedding saved for another image size."""
        state = dict(state)
        pos = state.get("pos_embed")
        if pos is not None and pos.shape != self.pos_embed.shape:
            old = math.isqrt(pos.shape[1] - self.num_prefix_tokens)
            state["pos_embed"] = pos_embed_for_grid(pos, old, (self.config.grid_size,) * 2)
        return self.load_state_dict(state, strict=strict)
