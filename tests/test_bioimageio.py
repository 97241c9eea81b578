"""BioImage Model Zoo export/import: a trained tiny UNETR round-trips through a bioimage.io package
that passes format validation and ``bioimageio.core.test_model``; BiaPy-made packages import with
BiaPy's outputs. Everything runs offline: sockets are disabled and the bioimage.io cache is private."""

import contextlib
import io
import socket
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.spec")
from bioimageio.spec import load_description, save_bioimageio_package, settings
from bioimageio.spec.model import v0_5 as spec

from napari_lightmycells.checkpoint import save_checkpoint
from napari_lightmycells.cli import main
from napari_lightmycells.errors import ModelError
from napari_lightmycells.inference.predictor import Predictor
from napari_lightmycells.loading import load_model
from napari_lightmycells.model_zoo import export_bioimageio, import_bioimageio
from napari_lightmycells.model_zoo.architecture import standalone_kwargs
from napari_lightmycells.model_zoo.unetr_standalone import UNETR2D as StandaloneUNETR2D
from napari_lightmycells.models import UNETR2D, UNETRConfig, ViTConfig, create_model


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory):
    """No network, and a fresh bioimage.io cache, for every test of this module."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in tests")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(settings, "cache_path", tmp_path_factory.mktemp("bioimageio_cache"))
        yield


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """``unetr_tiny`` after a few Adam steps on random data (weights differ from the initialisation)."""
    torch.manual_seed(0)
    model = create_model("unetr_tiny")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, targets = torch.randn(2, 1, 64, 64), torch.randn(2, 1, 64, 64)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(images), targets).backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("models") / "mito_pc.pt"
    return save_checkpoint(
        path, model, organelle="Mitochondria", modality=("PC",), provenance_extra={"epoch": 3}
    )


@pytest.fixture(scope="module")
def package(trained_checkpoint, tmp_path_factory):
    return export_bioimageio(trained_checkpoint, tmp_path_factory.mktemp("zoo") / "mito.zip", authors=["Ada"])


def test_package_passes_format_validation(package):
    descr = load_description(package)
    assert isinstance(descr, spec.ModelDescr), descr.validation_summary.display()
    assert descr.validation_summary.status == "valid-format"
    assert not any(detail.errors for detail in descr.validation_summary.details)
    names = set(zipfile.ZipFile(package).namelist())
    assert {
        "rdf.yaml",
        "weights.pt",
        "weights_torchscript.pt",
        "unetr_standalone.py",
        "test_input.npy",
        "test_output.npy",
        "cover.png",
        "README.md",
        "lightmycells_model_card.json",
    } <= names
    weights = descr.weights.pytorch_state_dict
    assert isinstance(weights.architecture, spec.ArchitectureFromFileDescr)
    assert weights.architecture.kwargs["token_size"] == 8
    assert descr.weights.torchscript.parent == "pytorch_state_dict"
    assert [step.id for step in descr.inputs[0].preprocessing if step.id != "ensure_dtype"] == [
        "zero_mean_unit_variance"
    ]
    assert descr.inputs[0].axes[2].size == spec.ParameterizedSize(min=8, step=8)
    assert {str(c.doi) for c in descr.cite if c.doi} == {
        "10.1109/ISBI56570.2024.10635343",
        "10.1101/2024.04.22.590525",
    }
    assert "Mitochondria" in descr.name and "mitochondria" in descr.tags
    assert [a.name for a in descr.authors] == ["Ada"]


def test_package_passes_bioimageio_core_test_model(package):
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(package)
    assert summary.status == "passed", summary.display()


def test_round_trip_gives_identical_model_and_predictions(trained_checkpoint, package):
    original, original_card = load_model(trained_checkpoint)
    imported, card = import_bioimageio(package)
    assert not torch.equal(
        create_model("unetr_tiny").state_dict()["encoder.cls_token"],
        original.state_dict()["encoder.cls_token"],
    )  # trained, not the init
    assert card.config == original_card.config
    assert (card.organelle, card.modality, card.normalization) == ("Mitochondria", ("PC",), "zscore")
    assert card.provenance == original_card.provenance
    x = torch.randn(1, 1, 80, 96)
    with torch.no_grad():
        assert torch.equal(imported(x), original(x))
    image = np.random.default_rng(1).normal(500, 50, (64, 96)).astype(np.float32)
    kwargs = {"device": "cpu", "tile_size": 64, "overlap": 0.25}
    expected = Predictor({"Mitochondria": original}, **kwargs).predict(image)["Mitochondria"]
    result = Predictor({"Mitochondria": imported}, **kwargs).predict(image)["Mitochondria"]
    np.testing.assert_array_equal(result, expected)


def test_import_from_the_architecture_when_the_model_card_is_missing(trained_checkpoint, package, tmp_path):
    descr = load_description(package)
    descr.attachments = []
    stripped = save_bioimageio_package(descr, output_path=tmp_path / "stripped.zip")
    model, card = import_bioimageio(stripped)
    original, original_card = load_model(trained_checkpoint)
    assert replace(card.config, skip_blocks=None) == original_card.config and card.organelle == "Mitochondria"
    assert card.provenance["source"] == "bioimageio"
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


def test_standalone_architecture_reproduces_unetr2d():
    torch.manual_seed(0)
    config = UNETRConfig(
        encoder=ViTConfig(crop_size=32, token_size=8, embed_dim=32, depth=3, num_heads=2),
        decoder_filters=4,
        kernel_size=3,
        skip_blocks=(1, 3),
        decoder_norm="bn",
        decoder_activation="elu",
    )
    ours = UNETR2D(config).eval()
    with torch.no_grad():
        ours.encoder.pos_embed.normal_()
        for module in ours.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
    standalone = StandaloneUNETR2D(**standalone_kwargs(config)).eval()
    standalone.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 1, 40, 56)
    with torch.no_grad():
        assert torch.equal(standalone(x), ours(x))
        assert torch.equal(torch.jit.script(standalone)(x), ours(x))


def test_biapy_package_imports_with_biapy_outputs(tmp_path):
    biapy_unetr = pytest.importorskip("biapy.models.unetr")
    kwargs = {
        "input_shape": [32, 32, 1],
        "patch_size": 8,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "mlp_ratio": 4.0,
        "num_filters": 4,
        "output_channels": [1],
        "output_channel_info": ["F"],
        "decoder_activation": "relu",
        "ViT_hidd_mult": 1,
        "normalization": "bn",
        "k_size": 3,
    }
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        biapy_model = biapy_unetr.UNETR(**kwargs)
    with torch.no_grad():
        biapy_model.pos_embed.normal_()
        for module in biapy_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    biapy_model.eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        expected = biapy_model(x)
    package = save_bioimageio_package(
        _biapy_style_descr(biapy_model, kwargs, x, expected, tmp_path), output_path=tmp_path / "biapy.zip"
    )
    model, card = import_bioimageio(package)
    with torch.no_grad():
        assert (model(x) - expected).abs().max() < 1e-4
    assert card.provenance["source"] == "biapy" and card.organelle == "Nucleus"
    assert model.config.decoder_norm == "bn" and model.config.resolved_skip_blocks() == (1, 2)


def _biapy_style_descr(model, kwargs, x, y, folder):
    """A package laid out as BiaPy exports UNETRs: state dict + ``biapy.models.unetr.UNETR`` kwargs."""
    torch.save(model.state_dict(), folder / "model_weights.pt")
    np.save(folder / "test_input.npy", x.numpy())
    np.save(folder / "test_output.npy", y.numpy())
    (folder / "README.md").write_text("# BiaPy nucleus model\n")

    def axes(kind):
        return [
            spec.BatchAxis(),
            spec.ChannelAxis(channel_names=[spec.Identifier("c0")]),
            kind(id=spec.AxisId("y"), size=32),
            kind(id=spec.AxisId("x"), size=32),
        ]

    return spec.ModelDescr(
        name="BiaPy UNETR Nucleus from BF",
        description="BiaPy image-to-image model predicting nuclei",
        authors=[spec.Author(name="BiaPy")],
        cite=[spec.CiteEntry(text="BiaPy", doi=spec.Doi("10.1101/2024.02.03.576026"))],
        license=spec.LicenseId("MIT"),
        documentation=folder / "README.md",
        tags=["biapy"],
        inputs=[
            spec.InputTensorDescr(
                id=spec.TensorId("input0"),
                axes=axes(spec.SpaceInputAxis),
                test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
                preprocessing=[spec.ZeroMeanUnitVarianceDescr()],
            )
        ],
        outputs=[
            spec.OutputTensorDescr(
                id=spec.TensorId("output0"),
                axes=axes(spec.SpaceOutputAxis),
                test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
            )
        ],
        weights=spec.WeightsDescr(
            pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                source=folder / "model_weights.pt",
                pytorch_version=spec.Version("2.4"),
                architecture=spec.ArchitectureFromLibraryDescr(
                    import_from="biapy.models.unetr", callable=spec.Identifier("UNETR"), kwargs=kwargs
                ),
            )
        ),
    )


def test_cli_export_then_import_writes_an_equivalent_checkpoint(trained_checkpoint, tmp_path, capsys):
    zip_path, restored = tmp_path / "cli.zip", tmp_path / "restored.pt"
    assert (
        main(
            [
                "export",
                str(trained_checkpoint),
                "--output",
                str(zip_path),
                "--name",
                "Mito from PC test",
                "--author",
                "Ada",
                "--author",
                "Grace",
            ]
        )
        == 0
    )
    descr = load_description(zip_path)
    assert descr.name == "Mito from PC test" and [a.name for a in descr.authors] == ["Ada", "Grace"]
    assert main(["import", str(zip_path), "--output", str(restored)]) == 0
    model, card = load_model(restored)
    original, _ = load_model(trained_checkpoint)
    assert card.organelle == "Mitochondria" and card.modality == ("PC",)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values()))
    assert "wrote" in capsys.readouterr().out


def test_mae_checkpoints_and_missing_packages_are_refused(tmp_path, capsys):
    mae = save_checkpoint(tmp_path / "mae.pt", create_model("mae_tiny"))
    with pytest.raises(ModelError, match="MAE"):
        export_bioimageio(mae, tmp_path / "mae.zip")
    assert main(["import", str(tmp_path / "missing.zip"), "--output", str(tmp_path / "x.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_packages_load_and_predict_wherever_checkpoints_do(trained_checkpoint, package, tmp_path, capsys):
    """``load_model`` (and so the Predictor, the CLI and the widget) accepts a bioimage.io zip directly."""
    from napari_lightmycells.cli import main
    from napari_lightmycells.data.io import read_image, write_ome_tiff

    original, _ = load_model(trained_checkpoint)
    packaged, card = load_model(package)
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(original(x), packaged(x))
    image = write_ome_tiff(tmp_path / "cell_BF.ome.tiff", np.random.default_rng(0).normal(100, 9, (64, 80)))
    assert (
        main(["predict", str(image), "-o", str(tmp_path / "out"), "-m", str(package), "--tile-size", "64"])
        == 0
    )
    written = read_image(tmp_path / "out" / f"cell_BF_{card.organelle}.ome.tiff")
    assert written.data.shape == (64, 80)


def test_export_and_import_never_replace_files_unless_asked(trained_checkpoint, package, tmp_path, capsys):
    zip_path, checkpoint = tmp_path / "taken.zip", tmp_path / "taken.pt"
    zip_path.write_bytes(b"precious")
    checkpoint.write_bytes(b"precious")
    assert main(["export", str(trained_checkpoint), "-o", str(zip_path)]) == 2
    assert "already exists" in capsys.readouterr().err and zip_path.read_bytes() == b"precious"
    assert main(["import", str(package), "-o", str(checkpoint)]) == 2
    assert "already exists" in capsys.readouterr().err and checkpoint.read_bytes() == b"precious"
    assert main(["import", str(package), "-o", str(checkpoint), "--overwrite"]) == 0
    assert load_model(checkpoint)[1].organelle == "Mitochondria"


def test_export_into_a_read_only_folder_is_one_line(trained_checkpoint, read_only_folder, capsys):
    assert main(["export", str(trained_checkpoint), "-o", str(read_only_folder / "m.zip")]) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and err.count("\n") == 1


def test_package_whose_weights_are_not_a_state_dict_is_refused(package, tmp_path, capsys):
    descr = load_description(package)
    torch.save([torch.ones(2)], tmp_path / "weights.pt")
    weights = descr.weights.pytorch_state_dict
    descr.weights.pytorch_state_dict = weights.model_copy(
        update={"source": tmp_path / "weights.pt", "sha256": None}
    )
    descr.weights.torchscript = None
    bad = save_bioimageio_package(descr, output_path=tmp_path / "list.zip")
    assert main(["import", str(bad), "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "hold a list, not a state dict" in err and err.count("\n") == 1


def test_oversized_package_members_are_refused_before_reading(package, tmp_path):
    """A zip member that would unpack to 300 MiB (a zip bomb: 0.3 MiB compressed) is refused from the
    zip directory, before the package is read."""
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(package.read_bytes())
    with (
        zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("notes.txt", "w") as out,
    ):
        chunk = bytes(16 * 1024**2)
        for _ in range(300 // 16 + 1):
            out.write(chunk)
    assert bomb.stat().st_size < 5 * 1024**2
    with pytest.raises(ModelError, match=r"notes.txt unpacks to 304 MiB, over the 256 MiB allowed"):
        import_bioimageio(bomb)
