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
