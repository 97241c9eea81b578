"""2D UNETR: a ViT encoder whose intermediate tokens feed a convolutional U-Net decoder.

Layout follows BiaPy's UNETR (Franco-Barranco et al., ISBI 2024) so its checkpoints convert
one-to-one (see :mod:`.biapy`): the last encoder block goes through a transposed convolution
(bottleneck); ``levels - 1`` earlier blocks are projected up to their decoder level ("skip
projections"), concatenated and fused by double convolutions; the raw input joins at full resolution.
``levels = log2(token_size)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .vit import ViTConfig, ViTEncoder

NORMS = ("bn", "in", "none")
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


@dataclass(frozen=True)
class UNETRConfig:
    """Every hyper-parameter of a :class:`UNETR2D`; stored in checkpoints to rebuild the model."""

    encoder: ViTConfig = field(default_factory=ViTConfig)
    out_channels: int = 1
    decoder_filters: int = 32
    kernel_size: int = 9
    skip_blocks: tuple[int, ...] | None = (
        None  # 1-based encoder blocks feeding the skips; None = evenly spaced
    )
    decoder_norm: str = "bn"
    decoder_activation: str = "relu"

    @property
    def levels(self) -> int:
        return int(math.log2(self.encoder.token_size))

    def resolved_skip_blocks(self) -> tuple[int, ...]:
        """The encoder blocks (1-based, shallow to deep) whose tokens feed decoder levels."""
        if self.skip_blocks is not None:
            return tuple(self.skip_blocks)
        every = max(1, self.encoder.depth // self.levels)
        return tuple(every * i for i in range(1, self.levels))

    def validate(self) -> None:
        p = self.encoder.token_size
        if p < 2 or 2**self.levels != p:
            raise ValueError(
                f"token_size must be a power of two >= 2 (the decoder doubles per level), got {p}"
            )
        blocks = self.resolved_skip_blocks()
        if len(blocks) != self.levels - 1 or not all(1 <= b <= self.encoder.depth for b in blocks):
            raise ValueError(
                f"skip_blocks must name {self.levels - 1} blocks in 1..{self.encoder.depth}, got {blocks}"
            )
        if self.decoder_norm not in NORMS:
            raise ValueError(f"decoder_norm must be one of {NORMS}, got {self.decoder_norm!r}")
        if self.decoder_activation not in ACTIVATIONS:
            raise ValueError(f"decoder_activation must be one of {tuple(ACTIVATIONS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> UNETRConfig:
        data = dict(data)
        data["encoder"] = ViTConfig.from_dict(data["encoder"])
        if data.get("skip_blocks") is not None:
            data["skip_blocks"] = tuple(data["skip_blocks"])
        return cls(**data)


def conv_norm_act(in_ch: int, out_ch: int, config: UNETRConfig) -> nn.Sequential:
    """Convolution ('same' padding) -> normalisation -> activation."""
    norm = {
        "bn": lambda: nn.BatchNorm2d(out_ch),
        "in": lambda: nn.InstanceNorm2d(out_ch, affine=True),
        "none": nn.Identity,
    }[config.decoder_norm]()
    conv = nn.Conv2d(in_ch, out_ch, config.kernel_size, padding="same")
    return nn.Sequential(conv, norm, ACTIVATIONS[config.decoder_activation]())


def double_conv(in_ch: int, out_ch: int, config: UNETRConfig) -> nn.Sequential:
    return nn.Sequential(conv_norm_act(in_ch, out_ch, config), conv_norm_act(out_ch, out_ch, config))


def upsample(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2, bias=False)


class UNETRDecoder(nn.Module):
    """CNN decoder turning encoder tokens (deepest first) and the raw input into the output image."""

    def __init__(self, config: UNETRConfig):
        super().__init__()
        dim, f, levels = config.encoder.embed_dim, config.decoder_filters, config.levels
        self.bottleneck = upsample(dim, f * 2 ** (levels - 1))
        self.skip_projections = nn.ModuleList()
        self.fusions = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(1, levels)):
            width = f * 2**level
            steps: list[nn.Module] = []
            in_ch = dim
            for _ in range(levels - level):
                steps += [upsample(in_ch, width), conv_norm_act(width, width, config)]
                in_ch = width
            self.skip_projections.append(nn.Sequential(*steps))
            self.fusions.append(double_conv(2 * width, width, config))
            self.upsamplers.append(upsample(width, f * 2 ** (level - 1)))
        self.input_skip = double_conv(config.encoder.in_channels, f, config)
        self.output_fusion = double_conv(2 * f, f, config)
        self.head = nn.Conv2d(f, config.out_channels, kernel_size=1)

    def forward(self, image: torch.Tensor, deepest: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.bottleneck(deepest)
        for skip, project, fuse, up in zip(skips, self.skip_projections, self.fusions, self.upsamplers):
            x = up(fuse(torch.cat([x, project(skip)], dim=1)))
        x = self.output_fusion(torch.cat([self.input_skip(image), x], dim=1))
        return self.head(x)


class UNETR2D(nn.Module):
    """UNETR for 2D image-to-image regression: ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    ``H`` and ``W`` must be multiples of ``token_size``; they need not equal the training size.
    """

    def __init__(self, config: UNETRConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.token_size = config.encoder.token_size
        self.crop_size = config.encoder.crop_size  # training crop side: the default prediction tile
        self.encoder = ViTEncoder(config.encoder)
        self.decoder = UNETRDecoder(config)
        self._skip_blocks = config.resolved_skip_blocks()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        cls, tokens, grid = self.encoder.embed(image)
        x = torch.cat([cls, tokens], dim=1)
        skips = []
        for index, block in enumerate(self.encoder.blocks, start=1):
            x = block(x)
            if index in self._skip_blocks:
                skips.insert(0, self._to_map(x, grid))
        return self.decoder(image, self._to_map(x, grid), skips)

    def _to_map(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Drop the class token and reshape ``(B, 1+N, D)`` tokens into a ``(B, D, rows, cols)`` map."""
        patches = tokens[:, self.encoder.num_prefix_tokens :]
        return patches.transpose(1, 2).reshape(patches.shape[0], -1, *grid)
