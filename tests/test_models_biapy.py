"""Parity with BiaPy's UNETR: converted weights give BiaPy's outputs (max abs diff < 1e-4, fp32).

Committed fixtures always run: ``fixtures/biapy_unetr_tiny.pt`` (made by ``fixtures/make_biapy_fixture.py``
with BiaPy 3.7) and ``fixtures/biapy343/`` (BiaPy 3.4.3, the version of the published LightMyCells
models, whose checkpoints pickle a yacs CfgNode). With ``pip install biapy`` the tests also build BiaPy models live,
including the paper's configuration.
"""

import contextlib
import io
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from napari_lightmycells.checkpoint import read_checkpoint
from napari_lightmycells.errors import CheckpointError
from napari_lightmycells.loading import load_model
from napari_lightmycells.models import UNETR2D, count_parameters, unetr_config
from napari_lightmycells.models.biapy import convert_unetr_state_dict, unetr_from_biapy

FIXTURES = Path(__file__).parent / "fixtures"


def test_committed_biapy_checkpoint_reproduces_biapy_output():
    model, card = load_model(FIXTURES / "biapy_unetr_tiny.pt")
    expected = torch.load(FIXTURES / "biapy_unetr_tiny_io.pt", weights_only=True)
    with torch.no_grad():
        output = model(expected["input"])
    assert (output - expected["output"]).abs().max() < 1e-4
    assert card.provenance["source"] == "biapy"
    assert model.config.decoder_norm == "bn" and model.config.kernel_size == 3
    assert model.config.resolved_skip_blocks() == (1, 2)


def test_biapy_343_checkpoint_with_yacs_config_loads_and_reproduces_biapy():
    """Made by BiaPy 3.4.3's own build_model/save_model (fixtures/biapy343): ``cfg`` is a yacs CfgNode."""
    path = FIXTURES / "biapy343" / "lightmycells_tiny.pth"
    with pytest.raises(pickle.UnpicklingError):  # why a restricted allow-list is needed at all
        torch.load(path, weights_only=True)
    checkpoint = read_checkpoint(path)
    assert type(checkpoint["cfg"]) is dict and type(checkpoint["cfg"]["MODEL"]) is dict
    assert checkpoint["cfg"]["MODEL"]["UNETR_DEC_KERNEL_SIZE"] == 9 and "optimizer" in checkpoint
    model, card = load_model(path)
    expected = torch.load(FIXTURES / "biapy343" / "lightmycells_tiny_io.pt", weights_only=True)
    with torch.no_grad():
        output = model(expected["input"])
    assert output.shape == expected["output"].shape == (2, 1, 32, 32)
    assert (output - expected["output"]).abs().max() < 1e-4
    assert expected["output"].std() > 1e-3  # a real signal, not a constant
    config = model.config
    assert (config.decoder_norm, config.decoder_activation, config.kernel_size) == ("bn", "relu", 9)
    assert (config.decoder_filters, config.resolved_skip_blocks(), config.encoder.token_size) == (
        2,
        (3, 6),
        8,
    )
    assert (config.encoder.embed_dim, config.encoder.depth, config.encoder.num_heads) == (16, 6, 2)
    assert card.provenance["source"] == "biapy"


def test_non_unetr_biapy_checkpoint_is_refused(tmp_path):
    checkpoint = torch.load(FIXTURES / "biapy_unetr_tiny.pt", weights_only=True)
    checkpoint["cfg"] = {"MODEL": {"ARCHITECTURE": "resunet"}}
    with pytest.raises(CheckpointError, match="resunet"):
        unetr_from_biapy(checkpoint)


def test_unknown_parameter_names_are_refused():
    with pytest.raises(CheckpointError, match="Unexpected parameter"):
        convert_unetr_state_dict({"mystery.weight": torch.zeros(1)}, levels=3)


try:
    from biapy.models import unetr as biapy_unetr
except ImportError:  # the committed fixture above still runs
    biapy_unetr = None
needs_biapy = pytest.mark.skipif(biapy_unetr is None, reason="live parity needs `pip install biapy`")


def build_biapy(size, patch, dim, depth, heads, filters, k, mult, norm):
    with contextlib.redirect_stdout(io.StringIO()):
        return biapy_unetr.UNETR(
            input_shape=(size, size, 1),
            patch_size=patch,
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            mlp_ratio=4.0,
            num_filters=filters,
            output_channels=[1],
            output_channel_info=["F"],
            decoder_activation="relu",
            ViT_hidd_mult=mult,
            normalization=norm,
            k_size=k,
        )


def randomise_buffers(model):
    with torch.no_grad():
        model.pos_embed.normal_()
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)


@needs_biapy
@pytest.mark.parametrize("norm", ["bn", "in", "none"])
def test_live_biapy_parity_for_each_decoder_normalisation(norm, tmp_path):
    torch.manual_seed(0)
    reference = build_biapy(64, 16, 64, 4, 2, 8, 5, 1, norm)
    randomise_buffers(reference)
    reference.eval()
    path = tmp_path / "biapy.pth"
    cfg = {
        "MODEL": {"ARCHITECTURE": "unetr", "VIT_NUM_HEADS": 2, "UNETR_VIT_HIDD_MULT": 1, "ACTIVATION": "relu"}
    }
    torch.save({"model": reference.state_dict(), "cfg": cfg, "biapy_version": "3"}, path)
    model, _ = load_model(path)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() < 1e-4
    assert count_parameters(model) == count_parameters(reference)


@needs_biapy
@pytest.mark.slow
def test_live_biapy_parity_paper_config():
    """The paper's 768/12/12/32 UNETR with 32 filters, 9x9 kernels and BatchNorm (at 256² to keep CPU time low)."""
    torch.manual_seed(0)
    reference = build_biapy(256, 32, 768, 12, 12, 32, 9, 3, "bn").eval()
    randomise_buffers(reference)
    cfg = {
        "MODEL": {
            "ARCHITECTURE": "unetr",
            "VIT_NUM_HEADS": 12,
            "UNETR_VIT_HIDD_MULT": 3,
            "ACTIVATION": "relu",
        }
    }
    model = unetr_from_biapy({"model": reference.state_dict(), "cfg": cfg, "biapy_version": "3"})
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() < 1e-4
    assert model.config.resolved_skip_blocks() == (3, 6, 9, 12)


@needs_biapy
@pytest.mark.parametrize("norm", ["bn", "in"])
def test_paper_preset_parameter_count_matches_biapy_for_each_norm(norm):
    torch.manual_seed(0)
    for preset, filters, k in (("unetr_paper", 32, 9), ("unetr_paper_tubulin", 16, 7)):
        ours = UNETR2D(replace(unetr_config(preset), decoder_norm=norm))
        theirs = build_biapy(1024, 32, 768, 12, 12, filters, k, 3, norm)
        assert count_parameters(ours) == count_parameters(theirs)
