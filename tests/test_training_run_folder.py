"""Run folders: a new run never replaces another one unless asked (checked without training)."""

import pytest

from napari_lightmycells.training.config import ConfigError, TrainConfig
from napari_lightmycells.training.run_folder import next_free_folder, prepare_run_folder


@pytest.fixture
def earlier_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "last.pt", "config.yaml"):
        (run / name).write_bytes(b"earlier")
    return run


def test_resuming_into_another_run_folder_is_refused(earlier_run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "last.pt").write_bytes(b"interrupted")
    config = TrainConfig(output=str(earlier_run), resume=str(other / "last.pt"))
    with pytest.raises(ConfigError, match="is not empty"):
        prepare_run_folder(config)
    assert prepare_run_folder(config.replace(output=str(other))) == other  # its own folder: fine


def test_overwrite_deletes_the_earlier_checkpoints_first(earlier_run):
    prepare_run_folder(TrainConfig(output=str(earlier_run)), overwrite=True)
    assert sorted(p.name for p in earlier_run.iterdir()) == ["config.yaml"]


def test_the_runs_own_data_folder_and_temporaries_do_not_count(tmp_path):
    run = tmp_path / "run"
    (run / "layers_study" / "inputs").mkdir(parents=True)
    (run / ".last.pt.abc.tmp").write_bytes(b"killed")
    config = TrainConfig(output=str(run), data=str(run / "layers_study"))
    assert prepare_run_folder(config) == run and not (run / ".last.pt.abc.tmp").exists()
    assert next_free_folder(run, "layers_study") == run
    (run / "last.pt").write_bytes(b"a run")
    (tmp_path / "run-2").write_text("a file")
    assert next_free_folder(run, "layers_study") == tmp_path / "run-3"
