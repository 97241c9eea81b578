import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from napari_lightmycells.checkpoint import (
    atomic_save,
    card_from_checkpoint,
    load_checkpoint,
    load_encoder_state,
    read_checkpoint,
    save_checkpoint,
    unwrap,
)
from napari_lightmycells.errors import CheckpointError
from napari_lightmycells.models import MAE2D, UNETR2D, create_model, unetr_config


def test_roundtrip_gives_bit_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = create_model("unetr_tiny").eval()
    with torch.no_grad():  # non-default decoder statistics and weights
        model.decoder.head.bias.fill_(0.3)
    path = save_checkpoint(
        tmp_path / "nucleus.pt",
        model,
        organelle="Nucleus",
        modality=["BF", "PC"],
        provenance_extra={"epoch": 7, "metrics": {"val_psnr": 31.5}},
    )
    loaded, card = load_checkpoint(path)
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert isinstance(loaded, UNETR2D) and not loaded.training
    assert card.config == model.config
    assert (card.organelle, card.modality, card.normalization) == ("Nucleus", ("BF", "PC"), "zscore")
    assert card.provenance["epoch"] == 7 and card.provenance["metrics"]["val_psnr"] == 31.5
    assert card.provenance["torch"] == str(torch.__version__)
    assert "Nucleus" in card.describe() and "epoch 7" in card.describe()


def test_instance_norm_checkpoint_reloads_with_instance_norm(tmp_path):
    """Presets use BatchNorm; a checkpoint that carries instance norm (BiaPy 3.7's default) keeps it."""
    torch.manual_seed(0)
    model = UNETR2D(replace(unetr_config("unetr_tiny"), decoder_norm="in")).eval()
    loaded, card = load_checkpoint(save_checkpoint(tmp_path / "in.pt", model))
    assert card.config.decoder_norm == "in"
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in loaded.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_mae_checkpoint_rebuilds_mae_and_initialises_encoder(tmp_path):
    torch.manual_seed(0)
    mae = create_model("mae_tiny")
    path = save_checkpoint(tmp_path / "mae.pt", mae)
    loaded, card = load_checkpoint(path)
    assert isinstance(loaded, MAE2D) and card.kind == "mae"
    unetr = create_model("unetr_tiny")
    unetr.encoder.load_state_dict(load_encoder_state(path))
    assert torch.equal(unetr.encoder.blocks[-1].mlp.fc2.weight, mae.encoder.blocks[-1].mlp.fc2.weight)


def test_wrapped_models_are_unwrapped(tmp_path):
    model = create_model("unetr_tiny")

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap(Wrapper(model)) is model
    save_checkpoint(tmp_path / "w.pt", Wrapper(model))
    assert "encoder.cls_token" in read_checkpoint(tmp_path / "w.pt")["state_dict"]


def test_missing_corrupt_and_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable model checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="Not a napari-lightmycells checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="Cannot checkpoint"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))


def test_truncated_checkpoint_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("unetr_tiny"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_atomic_save_keeps_previous_file_when_writing_fails(tmp_path):
    path = atomic_save({"a": torch.ones(1)}, tmp_path / "state.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(1))
    assert os.listdir(tmp_path) == ["state.pt"]  # no temporary file left behind


class RunsCode:
    """Pickles as a call to os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_checkpoint_that_would_run_code_is_refused_in_one_line(tmp_path, zipped):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "cfg": RunsCode(marker)}, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert not marker.exists()
    assert "evil.pt was refused" in message and "\n" not in message and "weights_only" not in message
    if zipped:
        assert "posix.system" in message or "os.system" in message


def test_pt_holding_a_list_is_refused_in_one_line(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match=r"^list.pt holds a list, not a model checkpoint \(a dict\)\.$"):
        load_checkpoint(path)


def test_unknown_config_key_is_refused_in_one_line(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("unetr_tiny"))
    checkpoint = read_checkpoint(path)
    checkpoint["config"]["colour"] = "blue"
    with pytest.raises(CheckpointError, match="m.pt: the stored model config is not understood") as caught:
        card_from_checkpoint(checkpoint, str(path))
    assert "colour" in str(caught.value) and "\n" not in str(caught.value)


def test_checkpoint_layer_does_not_import_the_bioimageio_layer():
    code = "import sys, napari_lightmycells.checkpoint; print('napari_lightmycells.model_zoo' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
