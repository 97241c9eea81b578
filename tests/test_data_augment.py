"""Batched augmentations: alignment of input and target, exact geometry, intensity on the input only."""

import math

import pytest
import torch

from napari_lightmycells.data.augment import AugmentConfig, Augmenter, affine_matrices, gridmask

GEOMETRY_ONLY = {"brightness_p": 0.0, "contrast_p": 0.0, "gridmask_p": 0.0}
NOTHING = {"rotation_p": 0.0, "hflip_p": 0.0, "vflip_p": 0.0, "elastic_p": 0.0, **GEOMETRY_ONLY}


def _augmenter(seed=0, **overrides):
    return Augmenter(AugmentConfig(**overrides), generator=torch.Generator().manual_seed(seed))


def _pattern(batch=4, size=32):
    """A structured, non-symmetric pattern: stripes plus a gradient."""
    y, x = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    image = torch.sin(x / 3) + torch.cos(y / 5) + x / size
    return image.expand(batch, 1, size, size).clone() + torch.arange(batch).view(-1, 1, 1, 1)


def test_geometry_is_identical_on_input_and_target():
    image = _pattern()
    augmenter = _augmenter(rotation_p=1.0, elastic_p=1.0, **GEOMETRY_ONLY)
    out_image, out_target = augmenter(image, image.clone())
    assert not torch.allclose(out_image, image)
    torch.testing.assert_close(out_image, out_target)
    # A target that is a pixel-wise (affine) function of the input stays that function.
    out_image, out_target = _augmenter(seed=1, rotation_p=1.0, elastic_p=1.0, hflip_p=1, **GEOMETRY_ONLY)(
        image, 2 * image + 1
    )
    torch.testing.assert_close(out_target, 2 * out_image + 1, atol=1e-4, rtol=1e-4)


def test_same_seed_gives_same_augmentation():
    image = _pattern()
    a, _ = _augmenter(seed=5)(image)
    b, _ = _augmenter(seed=5)(image)
    torch.testing.assert_close(a, b)


def test_rotation_by_90_degrees_matches_rot90_away_from_borders():
    image = _pattern(batch=1, size=33)
    theta = affine_matrices(torch.tensor([math.pi / 2]), torch.tensor([False]), torch.tensor([False]), 33, 33)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 33, 33], align_corners=False)
    rotated = torch.nn.functional.grid_sample(image, grid, padding_mode="reflection", align_corners=False)
    expected = torch.rot90(image, 1, dims=(-2, -1))
    torch.testing.assert_close(rotated[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2], atol=1e-4, rtol=1e-4)


def test_flips_are_exact():
    image = _pattern()
    out, target = _augmenter(**{**NOTHING, "hflip_p": 1.0})(image, image)
    torch.testing.assert_close(out, torch.flip(image, dims=[-1]))
    torch.testing.assert_close(target, out)
    out, _ = _augmenter(**{**NOTHING, "vflip_p": 1.0})(image)
    torch.testing.assert_close(out, torch.flip(image, dims=[-2]))


def test_free_rotation_uses_mirror_padding():
    image = _pattern(batch=1)
    out, _ = _augmenter(**{**NOTHING, "rotation_p": 1.0, "rotation_degrees": 45.0})(image)
    corners = out[..., [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners.abs() > 1e-3).all()  # zero padding would leave empty corners
    assert out.min() >= image.min() - 1e-4 and out.max() <= image.max() + 1e-4


def test_intensity_changes_affect_the_input_only():
    image = _pattern()
    out_image, out_target = _augmenter(
        **{**NOTHING, "brightness_p": 1.0, "contrast_p": 1.0, "gridmask_p": 1.0}
    )(image, image.clone())
    torch.testing.assert_close(out_target, image)
    assert not torch.allclose(out_image, image)


def test_brightness_and_contrast_ranges():
    image = _pattern()
    out, _ = _augmenter(**{**NOTHING, "contrast_p": 1.0, "contrast_range": (2.0, 2.0)})(image)
    torch.testing.assert_close(out.std(dim=(1, 2, 3)), 2 * image.std(dim=(1, 2, 3)))
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), image.mean(dim=(1, 2, 3)))
    out, _ = _augmenter(**{**NOTHING, "brightness_p": 1.0, "brightness_range": (0.5, 0.5)})(image)
    torch.testing.assert_close(out - image, 0.5 * image.std(dim=(1, 2, 3), keepdim=True).expand_as(image))


def test_gridmask_follows_the_paper_definition():
    unit, ratio = 16.0, 0.6
    mask = gridmask(64, 64, torch.tensor([unit]), ratio, torch.zeros(1, 2), torch.zeros(1))
    assert mask.shape == (1, 64, 64)
    assert mask.mean().item() == pytest.approx(1 - (1 - ratio) ** 2, abs=0.03)
    dropped = (mask[0] == 0).nonzero()
    rows = dropped[:, 0].unique().numel()  # 4 squares per axis, each of side (1 - r) d = 6.4 pixels
    assert 4 * math.floor((1 - ratio) * unit) <= rows <= 4 * math.ceil((1 - ratio) * unit)
    rotated = gridmask(64, 64, torch.tensor([unit]), ratio, torch.zeros(1, 2), torch.tensor([0.5]))
    assert rotated.mean().item() == pytest.approx(1 - (1 - ratio) ** 2, abs=0.05)
    out, _ = _augmenter(**{**NOTHING, "gridmask_p": 1.0})(_pattern())
    assert (out == 0).float().mean() > 0.05


def test_probabilities_zero_disabled_and_eval_are_identity():
    image = _pattern()
    assert _augmenter(**NOTHING)(image)[0] is image
    disabled = Augmenter(AugmentConfig(enabled=False))
    assert disabled(image, image)[0] is image
    augmenter = _augmenter().eval()
    assert augmenter(image)[0] is image


def test_probability_is_per_sample():
    image = _pattern(batch=64)
    out, _ = _augmenter(**{**NOTHING, "hflip_p": 0.5})(image)
    flipped = [torch.allclose(o, torch.flip(i, dims=[-1])) for o, i in zip(out, image)]
    assert 15 < sum(flipped) < 49


def test_rejects_unbatched_input():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        Augmenter()(torch.zeros(1, 8, 8))
