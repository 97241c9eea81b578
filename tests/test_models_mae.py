import pytest
import torch

from napari_lightmycells.models import MAE2D, UNETR2D, create_model, mae_config, unetr_config
from napari_lightmycells.models.mae import grid_mask
from napari_lightmycells.models.vit import pos_embed_for_grid


def test_grid_mask_is_a_checkerboard_hiding_half():
    mask = grid_mask(4, 6).reshape(4, 6)
    assert mask.mean() == 0.5
    # neighbours always differ: no two adjacent tokens both hidden or both visible
    assert (mask[:, 1:] != mask[:, :-1]).all() and (mask[1:, :] != mask[:-1, :]).all()
    assert mask[0, 0] == 1


def test_model_uses_grid_mask_for_every_sample():
    torch.manual_seed(0)
    mae = create_model("mae_tiny")
    out = mae(torch.randn(3, 1, 64, 64))
    assert out.mask.shape == (3, 64)
    assert torch.equal(out.mask[0], grid_mask(8, 8)) and torch.equal(out.mask[1], out.mask[2])
    assert out.pred.shape == (3, 64, 8 * 8)


def test_random_mask_ratio_and_per_sample_variation():
    torch.manual_seed(0)
    mae = MAE2D(mae_config("mae_tiny", mask_type="random", mask_ratio=0.75))
    out = mae(torch.randn(4, 1, 64, 64))
    assert torch.allclose(out.mask.mean(dim=1), torch.full((4,), 0.75))
    assert not torch.equal(out.mask[0], out.mask[1])


def test_loss_only_counts_masked_patches():
    torch.manual_seed(0)
    mae = create_model("mae_tiny")
    images = torch.randn(2, 1, 64, 64)
    mask = mae.make_mask(2, (8, 8), images.device)
    perfect = mae.patchify(images)
    corrupted_visible = perfect.clone()
    corrupted_visible[mask == 0] += 5.0  # errors on visible patches must not count
    assert mae.loss(images, corrupted_visible, mask) == 0
    corrupted_hidden = perfect.clone()
    corrupted_hidden[mask == 1] += 1.0
    assert torch.isclose(mae.loss(images, corrupted_hidden, mask), torch.tensor(1.0))


def test_patchify_roundtrip_on_rectangular_images():
    mae = create_model("mae_tiny")
    x = torch.randn(2, 1, 40, 64)
    assert torch.equal(mae.unpatchify(mae.patchify(x), (5, 8)), x)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_decreases_on_a_tiny_run(norm_pix):
    torch.manual_seed(0)
    mae = MAE2D(mae_config("mae_tiny", norm_pix_loss=norm_pix))
    yy, xx = torch.meshgrid(torch.linspace(0, 6, 64), torch.linspace(0, 6, 64), indexing="ij")
    images = torch.stack([torch.sin(yy * f + xx) for f in (0.5, 1.0, 1.5, 2.0)]).unsqueeze(1)
    opt = torch.optim.AdamW(mae.parameters(), lr=2e-3)
    losses = []
    for _ in range(100):
        loss = mae(images).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5


def test_reconstruction_keeps_visible_patches_and_fills_hidden_ones():
    torch.manual_seed(0)
    mae = create_model("mae_tiny").eval()
    images = torch.randn(1, 1, 64, 64)
    shown = mae.reconstruct(images)
    mask = shown["mask"]
    assert mask.mean() == 0.5
    assert torch.equal(shown["reconstruction"][mask == 0], images[mask == 0])
    assert torch.equal(shown["masked"][mask == 1], torch.zeros_like(images[mask == 1]))
    assert not torch.equal(shown["reconstruction"][mask == 1], images[mask == 1])


def test_mae_encoder_transfers_into_unetr():
    torch.manual_seed(0)
    mae = create_model("mae_tiny")
    unetr = UNETR2D(unetr_config("unetr_tiny"))
    assert mae.config.encoder == unetr.config.encoder
    unetr.encoder.load_state_dict(mae.encoder_state_dict())
    for name, value in mae.encoder.state_dict().items():
        assert torch.equal(unetr.encoder.state_dict()[name], value), name
    # the transferred encoder computes the same tokens
    x = torch.randn(1, 1, 64, 64)
    assert torch.equal(unetr.encoder.embed(x)[1], mae.encoder.embed(x)[1])


def test_encoder_transfer_across_image_sizes_resamples_positions():
    mae = MAE2D(mae_config("mae_tiny"))
    with torch.no_grad():
        mae.encoder.pos_embed.normal_()  # not the sin-cos table the bigger model starts from
    big = UNETR2D(unetr_config("unetr_tiny", crop_size=128))
    big.encoder.load_state_dict_resampled(mae.encoder_state_dict())
    grid = mae.config.encoder.grid_size
    assert big.encoder.config.grid_size == 2 * grid
    expected = pos_embed_for_grid(mae.encoder.pos_embed, grid, (2 * grid, 2 * grid))
    assert torch.equal(big.encoder.pos_embed, expected)
    assert torch.equal(big.encoder.blocks[0].attn.qkv.weight, mae.encoder.blocks[0].attn.qkv.weight)
