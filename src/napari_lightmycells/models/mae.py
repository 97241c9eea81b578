"""Masked autoencoder (He et al., 2022) for self-supervised pretraining of the UNETR encoder.

Masking is *grid* (a checkerboard over the token grid: exactly half the tokens hidden when the
grid has an even number of tokens — the paper's choice for non object-centric microscopy) or
*random* (per-sample shuffling with ``mask_ratio``). The encoder is the same :class:`ViTEncoder`
as the UNETR's, so its weights transfer directly (:func:`encoder_state_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ._timm import Block
from .vit import ViTConfig, ViTEncoder, pos_embed_for_grid, sincos_pos_embed

MASK_TYPES = ("grid", "random")


@dataclass(frozen=True)
class MAEConfig:
    encoder: ViTConfig = field(default_factory=ViTConfig)
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mask_type: str = "grid"
    mask_ratio: float = 0.5  # used by random masking; grid masking always hides half
    norm_pix_loss: bool = False

    def validate(self) -> None:
        if self.mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {self.mask_type!r}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MAEConfig:
        data = dict(data)
        data["encoder"] = ViTConfig.from_dict(data["encoder"])
        return cls(**data)


def grid_mask(rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """Checkerboard over a token grid, flattened row-major: 1 = masked, 0 = visible."""
    r = torch.arange(rows, device=device).unsqueeze(1)
    c = torch.arange(cols, device=device).unsqueeze(0)
    return ((r + c) % 2 == 0).float().flatten()


@dataclass
class MAEOutput:
    loss: torch.Tensor
    pred: torch.Tensor  # (B, N, p*p*C) reconstructed patches (normalised space if norm_pix_loss)
    mask: torch.Tensor  # (B, N) 1 = masked
    grid: tuple[int, int]


class MAE2D(nn.Module):
    """ViT masked autoencoder for ``(B, C, H, W)`` images with sides multiple of the token size."""

    def __init__(self, config: MAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        enc = config.encoder
        self.token_size = enc.token_size
        self.encoder = ViTEncoder(enc)
        self.norm = nn.LayerNorm(enc.embed_dim)
        self.decoder_embed = nn.Linear(enc.embed_dim, config.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed(config.decoder_embed_dim, enc.grid_size), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(config.decoder_embed_dim, config.decoder_num_heads, enc.mlp_ratio, qkv_bias=True)
            for _ in range(config.decoder_depth)
        )
        for block in self.decoder_blocks:
            block.attn.fused_attn = True
        self.decoder_norm = nn.LayerNorm(config.decoder_embed_dim)
        self.decoder_pred = nn.Linear(config.decoder_embed_dim, enc.token_size**2 * enc.in_channels)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    # -- patches -------------------------------------------------------------------------------
    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, N, p*p*C)`` in row-major token order."""
        b, c, h, w = images.shape
        p = self.token_size
        x = images.reshape(b, c, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Inverse of :meth:`patchify`."""
        b, p, (rows, cols) = patches.shape[0], self.token_size, grid
        c = patches.shape[-1] // (p * p)
        x = patches.reshape(b, rows, cols, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, rows * p, cols * p)

    # -- masking -------------------------------------------------------------------------------
    def make_mask(self, batch: int, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """``(B, N)`` mask, 1 = hidden; every sample hides the same number of tokens."""
        n = grid[0] * grid[1]
        if self.config.mask_type == "grid":
            return grid_mask(*grid, device=device).expand(batch, n).contiguous()
        n_masked = min(n - 1, max(1, round(n * self.config.mask_ratio)))
        order = torch.rand(batch, n, device=device).argsort(dim=1)
        mask = torch.zeros(batch, n, device=device)
        mask.scatter_(1, order[:, :n_masked], 1.0)
        return mask

    # -- forward -------------------------------------------------------------------------------
    def forward_encoder(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        cls, tokens, grid = self.encoder.embed(images)
        keep = (mask == 0).nonzero(as_tuple=False)[:, 1].reshape(mask.shape[0], -1)
        visible = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        x = torch.cat([cls, visible], dim=1)
        for block in self.encoder.blocks:
            x = block(x)
        return self.norm(x), grid

    def forward_decoder(
        self, latent: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        x = self.decoder_embed(latent)
        b, n = mask.shape
        full = self.mask_token.to(x.dtype).expand(b, n, -1).clone()
        full[mask == 0] = x[:, 1:].reshape(-1, x.shape[-1])
        pos = pos_embed_for_grid(self.decoder_pos_embed, self.config.encoder.grid_size, grid).to(x.dtype)
        x = torch.cat([x[:, :1], full], dim=1) + pos
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error on the hidden patches only."""
        target = self.patchify(images)
        if self.config.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> MAEOutput:
        grid = self.encoder.grid_of(images)
        if mask is None:
            mask = self.make_mask(images.shape[0], grid, images.device)
        latent, grid = self.forward_encoder(images, mask)
        pred = self.forward_decoder(latent, mask, grid)
        return MAEOutput(self.loss(images, pred, mask), pred, mask, grid)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images for display: ``masked`` input, ``reconstruction`` (hidden patches predicted,
        visible ones kept) and the pixel ``mask`` (1 = hidden), all ``(B, C, H, W)``."""
        out = self.forward(images)
        pred = out.pred.float()
        if self.config.norm_pix_loss:  # back to image intensities using the visible statistics of each patch
            target = self.patchify(images)
            pred = pred * (target.var(dim=-1, keepdim=True) + 1e-6).sqrt() + target.mean(dim=-1, keepdim=True)
        p, c = self.token_size, images.shape[1]
        pixel_mask = self.unpatchify(out.mask.unsqueeze(-1).expand(-1, -1, p * p * c), out.grid)
        reconstruction = self.unpatchify(pred, out.grid).to(images.dtype)
        return {
            "masked": images * (1 - pixel_mask),
            "reconstruction": images * (1 - pixel_mask) + reconstruction * pixel_mask,
            "mask": pixel_mask,
        }

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder weights, ready for ``UNETR2D.encoder.load_state_dict``."""
        return self.encoder.state_dict()
