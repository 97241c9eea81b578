from napari_lightmycells.cli import main
from napari_lightmycells.models import count_parameters, create_model


def test_models_command_prints_parameter_counts(capsys):
    assert main(["models", "--name", "unetr_tiny"]) == 0
    out = capsys.readouterr().out
    assert f"{count_parameters(create_model('unetr_tiny')):,}" in out
    assert "k=3" in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 1
    assert "lightmycells" in capsys.readouterr().out


def test_out_of_memory_is_a_one_line_error_with_a_hint(monkeypatch, capsys):
    import torch

    from napari_lightmycells.cli import models as models_command

    def exhausted(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(models_command, "run", exhausted)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory") and "--accumulate" in err


def test_other_runtime_errors_are_not_hidden(monkeypatch):
    import pytest

    from napari_lightmycells.cli import models as models_command

    def broken(args):
        raise RuntimeError("a genuine bug")

    monkeypatch.setattr(models_command, "run", broken)
    with pytest.raises(RuntimeError, match="a genuine bug"):
        main(["models"])
