import pytest
import torch

from napari_lightmycells.errors import DataError
from napari_lightmycells.models import (
    UNETR2D,
    UNETRConfig,
    ViTConfig,
    count_parameters,
    create_model,
    unetr_config,
)
from napari_lightmycells.models.vit import ViTEncoder


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("unetr_tiny").eval()


@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (128, 40), (8, 8)])
def test_output_shape_matches_input_for_any_multiple_of_the_token(tiny, shape):
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        y = tiny(x)
    assert y.shape == (2, 1, *shape)
    assert torch.isfinite(y).all()


def test_side_not_multiple_of_token_is_a_clear_error(tiny):
    with pytest.raises(DataError, match="multiple of the 8-pixel token"):
        tiny(torch.randn(1, 1, 60, 64))


def test_reference_size_uses_stored_positional_embedding_unchanged(tiny):
    grid = tiny.encoder.config.grid_size
    assert tiny.encoder.pos_embed_for((grid, grid)) is tiny.encoder.pos_embed


def test_positional_embedding_is_resampled_along_each_axis(tiny):
    """The sin-cos table codes the row in its first half and the column in its second: resampled to a
    grid of another shape, the row code stays constant along each row and the column code down each column."""
    grid, dim = tiny.encoder.config.grid_size, tiny.encoder.config.embed_dim
    rows, cols = grid // 2, grid * 3
    resampled = tiny.encoder.pos_embed_for((rows, cols))
    assert resampled.shape == (1, 1 + rows * cols, dim)
    assert torch.equal(resampled[:, 0], tiny.encoder.pos_embed[:, 0])  # class token untouched
    tokens = resampled[0, 1:].reshape(rows, cols, dim)
    row_code, col_code = tokens[..., : dim // 2], tokens[..., dim // 2 :]
    torch.testing.assert_close(row_code, row_code[:, :1].expand_as(row_code))
    torch.testing.assert_close(col_code, col_code[:1].expand_as(col_code))
    assert not torch.allclose(row_code[0], row_code[-1]) and not torch.allclose(
        col_code[:, 0], col_code[:, -1]
    )


def test_translation_of_content_is_not_ignored(tiny):
    """Different inputs give different outputs: the network is not collapsed to a constant."""
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(tiny(x), tiny(torch.roll(x, 8, dims=-1)))


def test_skip_blocks_default_spacing_and_validation():
    cfg = UNETRConfig(encoder=ViTConfig(crop_size=64, token_size=32, embed_dim=32, depth=12, num_heads=2))
    assert cfg.resolved_skip_blocks() == (2, 4, 6, 8)  # BiaPy's default: every depth // log2(token) blocks
    with pytest.raises(ValueError, match="skip_blocks"):
        UNETR2D(UNETRConfig(encoder=cfg.encoder, skip_blocks=(1, 2)))
    with pytest.raises(ValueError, match="power of two"):
        UNETR2D(
            UNETRConfig(encoder=ViTConfig(crop_size=72, token_size=24, embed_dim=32, depth=4, num_heads=2))
        )


def test_paper_presets_match_the_paper():
    nucleus, tubulin = unetr_config("unetr_paper"), unetr_config("unetr_paper_tubulin")
    enc = nucleus.encoder
    assert (enc.embed_dim, enc.depth, enc.num_heads, enc.token_size) == (768, 12, 12, 32)
    assert (nucleus.decoder_filters, nucleus.kernel_size) == (32, 9)
    assert (tubulin.decoder_filters, tubulin.kernel_size) == (16, 7)
    assert nucleus.resolved_skip_blocks() == (3, 6, 9, 12)


@pytest.mark.parametrize("name", ["unetr_paper", "unetr_paper_tubulin", "unetr_small", "unetr_tiny"])
def test_presets_use_batchnorm_in_the_decoder_as_biapy_343(name):
    """BiaPy 3.4.3 (the paper's models) builds the UNETR decoder with MODEL.BATCH_NORMALIZATION = True."""
    assert unetr_config(name).decoder_norm == "bn"
    if name == "unetr_tiny":
        norms = {type(m) for m in create_model(name).decoder.modules() if "Norm" in type(m).__name__}
        assert norms == {torch.nn.BatchNorm2d}


def test_decoder_norm_of_a_crop_equals_the_crop_of_the_norm_only_for_batchnorm():
    """Eval-mode BatchNorm is a fixed per-channel affine map, so a tile is normalised as the whole image is;
    instance norm rescales every tile by its own statistics (the cause of seams between tiles)."""
    x = torch.randn(1, 4, 64, 64) * torch.linspace(0.5, 3, 64)  # statistics vary across the image
    for norm, local in ((torch.nn.BatchNorm2d(4), True), (torch.nn.InstanceNorm2d(4, affine=True), False)):
        norm.eval()
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
        with torch.no_grad():
            assert torch.allclose(norm(x)[..., :, :32], norm(x[..., :, :32]), atol=1e-5) is local


def test_backward_gives_gradients_to_encoder_and_decoder(tiny):
    model = create_model("unetr_tiny").train()
    loss = model(torch.randn(2, 1, 64, 64)).pow(2).mean()
    loss.backward()
    assert model.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.decoder.head.weight.grad.abs().sum() > 0
    assert model.encoder.pos_embed.grad is None  # fixed sin-cos embedding


def test_bf16_autocast_and_channels_last(tiny):
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        ref = tiny(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny(x)
        fast = tiny.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    tiny.to(memory_format=torch.contiguous_format)
    assert low.dtype == torch.bfloat16
    scale = ref.abs().max()
    assert (low.float() - ref).abs().max() < 0.1 * scale
    assert torch.allclose(fast, ref, atol=1e-5)


def test_parameter_count_includes_the_frozen_positional_embedding():
    model = create_model("unetr_tiny")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count_parameters(model) == trainable + model.encoder.pos_embed.numel()


def test_encoder_parameter_count_follows_the_vit_formula():
    """Patch embedding, class token, positional table, then per block: 2 LayerNorms, qkv and projection
    (with biases), and the MLP."""
    c = unetr_config("unetr_tiny").encoder
    d, hidden = c.embed_dim, int(c.embed_dim * c.mlp_ratio)
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    expected = (c.token_size**2 * c.in_channels * d + d) + d + (1 + c.grid_size**2) * d + c.depth * block
    assert count_parameters(ViTEncoder(c)) == expected
