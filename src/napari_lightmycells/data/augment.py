"""Batched data augmentation on torch tensors (B, C, H, W), run on whatever device the batch is on.

Geometric transforms (free-angle rotation, flips, elastic deformation) are combined into one sampling
grid per sample and applied identically to input and target with ``grid_sample`` (mirror padding).
Intensity transforms (brightness, contrast, GridMask) change the input only. Random numbers are drawn
on the CPU from ``generator`` (small per-sample parameters) and moved to the batch's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AugmentConfig:
    """Probabilities (per sample) and ranges of each augmentation."""

    enabled: bool = True
    rotation_p: float = 0.5
    rotation_degrees: float = 180.0  # angle drawn uniformly in [-rotation_degrees, rotation_degrees]
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    elastic_p: float = 0.3
    elastic_alpha: float = 8.0  # standard deviation of the displacement, in pixels
    elastic_grid: int = 6  # control points per side of the smooth displacement field
    brightness_p: float = 0.3
    brightness_range: tuple[float, float] = (-0.2, 0.2)  # additive, in units of the sample's std
    contrast_p: float = 0.3
    contrast_range: tuple[float, float] = (0.8, 1.2)  # multiplicative, around the sample's mean
    gridmask_p: float = 0.3
    gridmask_d_range: tuple[float, float] = (0.2, 0.6)  # grid unit d as a fraction of min(H, W)
    gridmask_ratio: float = 0.6  # GridMask r: kept part of a unit's edge; dropped squares are (1 - r) d
    gridmask_rotate: bool = True  # rotate the grid by a random angle


class Augmenter(nn.Module):
    """Apply :class:`AugmentConfig` augmentations to a batch; identity when disabled or in ``eval()`` mode."""

    def __init__(self, config: AugmentConfig | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config or AugmentConfig()
        self.generator = generator

    def forward(
        self, image: torch.Tensor, target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if image.ndim != 4:
            raise ValueError(f"Expected a (B, C, H, W) batch, got shape {tuple(image.shape)}")
        if not (self.config.enabled and self.training):
            return image, target
        grid = self._sampling_grid(image)
        if grid is not None:
            image = _resample(image, grid)
            target = None if target is None else _resample(target, grid)
        image = self._brightness_contrast(image)
        image = self._gridmask(image)
        return image, target

    # -- random numbers -------------------------------------------------------------------------
    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    def _chosen(self, batch: int, p: float) -> torch.Tensor:
        return self._rand(batch) < p

    def _uniform(self, batch: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * self._rand(batch)

    # -- geometry -------------------------------------------------------------------------------
    def _sampling_grid(self, image: torch.Tensor) -> torch.Tensor | None:
        """One (B, H, W, 2) grid with rotation, flips and elastic displacement, or None if unused."""
        cfg, (batch, _, height, width) = self.config, image.shape
        rotate = self._chosen(batch, cfg.rotation_p)
        hflip, vflip = self._chosen(batch, cfg.hflip_p), self._chosen(batch, cfg.vflip_p)
        elastic = self._chosen(batch, cfg.elastic_p)
        angles = torch.deg2rad(self._uniform(batch, -cfg.rotation_degrees, cfg.rotation_degrees)) * rotate
        if not (rotate.any() or hflip.any() or vflip.any() or elastic.any()):
            return None
        theta = affine_matrices(angles, hflip, vflip, height, width)
        grid = F.affine_grid(
            theta.to(image.device, image.dtype), [batch, 1, height, width], align_corners=False
        )
        if elastic.any():
            grid = grid + self._elastic_displacement(elastic, height, width).to(image.device, image.dtype)
        return grid

    def _elastic_displacement(self, chosen: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Smooth (B, H, W, 2) displacement in normalised coordinates (zero for unchosen samples)."""
        cfg = self.config
        coarse = torch.randn((len(chosen), 2, cfg.elastic_grid, cfg.elastic_grid), generator=self.generator)
        coarse = coarse * chosen.view(-1, 1, 1, 1)
        # Bicubic to a 1/8-resolution field (smooth), then cheap bilinear to full resolution.
        middle = (max(height // 8, cfg.elastic_grid), max(width // 8, cfg.elastic_grid))
        field = F.interpolate(coarse, size=middle, mode="bicubic", align_corners=True)
        field = F.interpolate(field, size=(height, width), mode="bilinear", align_corners=True)
        scale = torch.tensor([2.0 * cfg.elastic_alpha / width, 2.0 * cfg.elastic_alpha / height])
        return field.permute(0, 2, 3, 1) * scale

    # -- intensity (input only) -----------------------------------------------------------------
    def _brightness_contrast(self, image: torch.Tensor) -> torch.Tensor:
        cfg, batch = self.config, image.shape[0]
        contrast = torch.where(
            self._chosen(batch, cfg.contrast_p), self._uniform(batch, *cfg.contrast_range), 1.0
        )
        brightness = torch.where(
            self._chosen(batch, cfg.brightness_p), self._uniform(batch, *cfg.brightness_range), 0.0
        )
        if (contrast == 1).all() and (brightness == 0).all():
            return image
        shape = (batch, 1, 1, 1)
        std, mean = torch.std_mean(image, dim=(1, 2, 3), keepdim=True)
        contrast, brightness = contrast.view(shape).to(image), brightness.view(shape).to(image)
        return (image - mean) * contrast + mean + brightness * std

    def _gridmask(self, image: torch.Tensor) -> torch.Tensor:
        cfg, (batch, _, height, width) = self.config, image.shape
        chosen = self._chosen(batch, cfg.gridmask_p)
        unit = self._uniform(batch, *cfg.gridmask_d_range) * min(height, width)
        offsets = self._rand(batch, 2) * unit[:, None]
        angles = self._uniform(batch, 0.0, 2 * math.pi) * cfg.gridmask_rotate
        if not chosen.any():
            return image
        index = chosen.nonzero().flatten()
        mask = gridmask(
            height, width, unit[index], cfg.gridmask_ratio, offsets[index], angles[index], image.device
        )
        image = image.clone()
        image[index.to(image.device)] *= mask[:, None].to(image.dtype)
        return image


def affine_matrices(
    angles: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """(B, 2, 3) ``affine_grid`` matrices rotating by ``angles`` (radians) then flipping.

    Rotation is done in pixel space (aspect ratio corrected); a positive angle rotates the content
    counter-clockwise as displayed (y down), like ``torch.rot90(x, 1, dims=(-2, -1))`` for 90°.
    """
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(len(angles), 2, 3)
    # The grid maps output to input coordinates: a CCW display rotation (y down) samples at R(-a).
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    flips = torch.stack([1.0 - 2.0 * hflip.float(), 1.0 - 2.0 * vflip.float()], dim=1)  # (B, 2): x, y
    theta[:, :, :2] = theta[:, :, :2] * flips[:, None, :]
    return theta


def gridmask(
    height: int,
    width: int,
    unit: torch.Tensor,
    ratio: float,
    offsets: torch.Tensor,
    angles: torch.Tensor,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B, H, W) GridMask (Chen et al. 2020): 1 = keep, 0 = dropped square of side ``(1 - ratio) * unit``.

    One square is dropped per ``unit x unit`` cell of a grid shifted by ``offsets`` (B, 2) and rotated by
    ``angles`` (B,), so the kept fraction is ``1 - (1 - ratio) ** 2``.
    """
    y = (torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2).view(1, -1, 1)
    x = (torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2).view(1, 1, -1)
    cos, sin = [t.to(device).view(-1, 1, 1) for t in (torch.cos(angles), torch.sin(angles))]
    unit = unit.to(device).view(-1, 1, 1)
    offsets = offsets.to(device).view(-1, 2, 1, 1)
    # Rotated coordinates; the broadcasting keeps the (H, W)-sized work to one add per axis.
    u = (x * cos + offsets[:, 0]) + y * sin
    v = (y * cos + offsets[:, 1]) - x * sin
    dropped_side = (1 - ratio) * unit
    dropped = (torch.remainder(u, unit) < dropped_side) & (torch.remainder(v, unit) < dropped_side)
    return (~dropped).float()


def _resample(tensor: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(
        tensor, grid.to(tensor.dtype), mode="bilinear", padding_mode="reflection", align_corners=False
    )
