"""Self-contained 2D UNETR (PyTorch only), shipped inside BioImage Model Zoo packages.

Same network, parameter names and numerics as ``napari_lightmycells.models.UNETR2D`` (a ViT
encoder with timm-style blocks whose tokens feed a convolutional U-Net decoder; Franco-Barranco
et al., ISBI 2024), written without any dependency beyond ``torch`` so that any bioimage.io
consumer can build it: ``UNETR2D(**kwargs)`` with the kwargs of the package's architecture entry.
Inputs are ``(batch, in_channels, height, width)`` with sides a multiple of ``token_size``.
The module is TorchScript-compatible (hence ``typing`` annotations, for older PyTorch versions).
"""
# ruff: noqa: UP006, UP035, UP045

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, embed_dim: int, token_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=token_size, stride=token_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTEncoder(nn.Module):
    """Patch embedding, class token, fixed positional embedding (resampled to the input's grid), blocks."""

    def __init__(
        self,
        in_channels: int,
        crop_size: int,
        token_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
    ):
        super().__init__()
        self.grid_size = crop_size // token_size
        self.patch_embed = PatchEmbed(in_channels, embed_dim, token_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])

    def pos_embed_for(self, rows: int, cols: int) -> torch.Tensor:
        if rows == self.grid_size and cols == self.grid_size:
            return self.pos_embed
        table = self.pos_embed[:, 1:].reshape(1, self.grid_size, self.grid_size, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(rows, cols), mode="bicubic", antialias=True)
        table = table.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([self.pos_embed[:, :1], table], dim=1)


def conv_norm_act(in_ch: int, out_ch: int, kernel_size: int, norm: str, activation: str) -> nn.Sequential:
    if norm == "bn":
        norm_layer: nn.Module = nn.BatchNorm2d(out_ch)
    elif norm == "in":
        norm_layer = nn.InstanceNorm2d(out_ch, affine=True)
    else:
        norm_layer = nn.Identity()
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding="same")
    return nn.Sequential(conv, norm_layer, ACTIVATIONS[activation]())


def double_conv(in_ch: int, out_ch: int, kernel_size: int, norm: str, activation: str) -> nn.Sequential:
    return nn.Sequential(
        conv_norm_act(in_ch, out_ch, kernel_size, norm, activation),
        conv_norm_act(out_ch, out_ch, kernel_size, norm, activation),
    )


def upsample(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2, bias=False)


class UNETRDecoder(nn.Module):
    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        levels: int,
        out_channels: int,
        decoder_filters: int,
        kernel_size: int,
        norm: str,
        activation: str,
    ):
        super().__init__()
        f = decoder_filters
        self.bottleneck = upsample(embed_dim, f * 2 ** (levels - 1))
        self.skip_projections = nn.ModuleList()
        self.fusions = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(1, levels)):
            width = f * 2**level
            steps: List[nn.Module] = []
            in_ch = embed_dim
            for _ in range(levels - level):
                steps += [upsample(in_ch, width), conv_norm_act(width, width, kernel_size, norm, activation)]
                in_ch = width
            self.skip_projections.append(nn.Sequential(*steps))
            self.fusions.append(double_conv(2 * width, width, kernel_size, norm, activation))
            self.upsamplers.append(upsample(width, f * 2 ** (level - 1)))
        self.input_skip = double_conv(in_channels, f, kernel_size, norm, activation)
        self.output_fusion = double_conv(2 * f, f, kernel_size, norm, activation)
        self.head = nn.Conv2d(f, out_channels, kernel_size=1)


class UNETR2D(nn.Module):
    """UNETR for 2D image-to-image regression: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``."""

    def __init__(
        self,
        in_channels: int = 1,
        crop_size: int = 1024,
        token_size: int = 32,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_channels: int = 1,
        decoder_filters: int = 32,
        kernel_size: int = 9,
        skip_blocks: Optional[List[int]] = None,
        decoder_norm: str = "bn",
        decoder_activation: str = "relu",
    ):
        super().__init__()
        levels = token_size.bit_length() - 1
        if skip_blocks is None:
            every = max(1, depth // levels)
            skip_blocks = [every * i for i in range(1, levels)]
        self.token_size = token_size
        self.crop_size = crop_size
        self.skip_blocks: List[int] = list(skip_blocks)
        self.encoder = ViTEncoder(in_channels, crop_size, token_size, embed_dim, depth, num_heads, mlp_ratio)
        self.decoder = UNETRDecoder(
            in_channels,
            embed_dim,
            levels,
            out_channels,
            decoder_filters,
            kernel_size,
            decoder_norm,
            decoder_activation,
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        rows, cols = image.shape[-2] // self.token_size, image.shape[-1] // self.token_size
        tokens = self.encoder.patch_embed(image)
        pos = self.encoder.pos_embed_for(rows, cols).to(tokens.dtype)
        cls = self.encoder.cls_token.expand(tokens.shape[0], -1, -1) + pos[:, :1]
        x = torch.cat([cls, tokens + pos[:, 1:]], dim=1)
        skips: List[torch.Tensor] = []
        for index, block in enumerate(self.encoder.blocks, start=1):
            x = block(x)
            if index in self.skip_blocks:
                skips.insert(0, self._to_map(x, rows, cols))
        decoder = self.decoder
        x = decoder.bottleneck(self._to_map(x, rows, cols))
        for level, (project, fuse, up) in enumerate(
            zip(decoder.skip_projections, decoder.fusions, decoder.upsamplers)
        ):
            x = up(fuse(torch.cat([x, project(skips[level])], dim=1)))
        x = decoder.output_fusion(torch.cat([decoder.input_skip(image), x], dim=1))
        return decoder.head(x)

    def _to_map(self, tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        patches = tokens[:, 1:]
        return patches.transpose(1, 2).reshape(patches.shape[0], -1, rows, cols)
