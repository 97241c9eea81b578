"""Discovery of LightMyCells-style studies and of the inputs/ + targets/<organelle>/ layout."""

import numpy as np
import pytest

from napari_lightmycells.data.io import write_ome_tiff
from napari_lightmycells.data.study import check_image_content, discover_study
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.errors import DataError


def _write(path, shape=(16, 16), value=None):
    data = np.full(shape, value, np.uint16) if value is not None else np.arange(np.prod(shape)).reshape(shape)
    write_ome_tiff(path, data.astype(np.uint16))


def test_discovers_a_generated_study(tmp_path):
    make_synthetic_study(
        tmp_path, n_cases=4, n_planes=3, organelles=("Nucleus", "Actin"), modalities=("BF", "PC")
    )
    study = discover_study(tmp_path)
    assert study.layout == "LightMyCells"
    assert [case.case_id for case in study.cases] == ["1", "2", "3", "4"]
    case = study.cases[1]
    assert case.modality == "PC"
    assert [p.name for p in case.inputs] == [f"image_2_PC_z{z}.ome.tiff" for z in range(3)]
    assert set(case.targets) == {"Nucleus", "Actin"}
    summary = study.summary()
    assert (summary.n_cases, summary.n_input_files, summary.n_planes) == (4, 12, 12)
    assert summary.modalities == {"BF": 2, "PC": 2}
    assert summary.organelles == {"Nucleus": 4, "Actin": 4}
    text = str(summary)
    assert "cases:        4" in text and "Nucleus 4, Actin 4" in text and "BF 2, PC 2" in text
    study.validate(check_content=True)


def test_planes_are_sorted_numerically_by_z(tmp_path):
    for z in (10, 2, 0):
        _write(tmp_path / f"image_7_DIC_z{z}.ome.tiff")
    _write(tmp_path / "image_7_Tubulin.ome.tiff")
    case = discover_study(tmp_path).cases[0]
    assert [p.name for p in case.inputs] == [
        "image_7_DIC_z0.ome.tiff",
        "image_7_DIC_z2.ome.tiff",
        "image_7_DIC_z10.ome.tiff",
    ]


def test_nested_study_folders_and_filters(tmp_path):
    make_synthetic_study(tmp_path, n_cases=6, organelles=("Nucleus",), modalities=("BF", "DIC"), n_studies=2)
    study = discover_study(tmp_path)
    assert len(study) == 6 and study.cases[0].case_id == "Study_1/1"
    dic = discover_study(tmp_path, organelle="nucleus", modality="dic")
    assert {case.modality for case in dic.cases} == {"DIC"} and len(dic) == 3
    with pytest.raises(DataError, match=r"No PC inputs .* found modalities: BF, DIC"):
        study.select(modality="PC")
    with pytest.raises(DataError, match=r"No Mitochondria targets .* found organelles: Nucleus"):
        study.select(organelle="Mitochondria")
    with pytest.raises(DataError, match=r"Unknown organelle 'Golgi'"):
        study.select(organelle="Golgi")


def test_cases_with_other_organelles_are_left_out(tmp_path):
    _write(tmp_path / "image_1_BF_z0.ome.tiff")
    _write(tmp_path / "image_1_Nucleus.ome.tiff")
    _write(tmp_path / "image_2_BF_z0.ome.tiff")
    _write(tmp_path / "image_2_Actin.ome.tiff")
    assert [case.case_id for case in discover_study(tmp_path, organelle="Actin").cases] == ["2"]


def test_empty_and_missing_folders_raise(tmp_path):
    with pytest.raises(DataError, match=r"No input images found in .*Expected LightMyCells files"):
        discover_study(tmp_path)
    with pytest.raises(DataError, match="Study folder not found"):
        discover_study(tmp_path / "nope")


def test_input_without_target_raises_when_an_organelle_is_requested(tmp_path):
    make_synthetic_study(tmp_path, n_cases=2)
    _write(tmp_path / "image_9_BF_z0.ome.tiff", shape=(128, 128))
    assert len(discover_study(tmp_path)) == 3  # fine for prediction
    with pytest.raises(
        DataError, match=r"1 input case\(s\) .* have no target image, e.g. image_9_BF_z0.ome.tiff"
    ):
        discover_study(tmp_path, organelle="Nucleus")


def test_target_without_inputs_raises(tmp_path):
    make_synthetic_study(tmp_path, n_cases=1)
    _write(tmp_path / "image_5_Mitochondria.ome.tiff")
    with pytest.raises(DataError, match=r"target\(s\) have no input image, e.g. .*image_5_Mitochondria"):
        discover_study(tmp_path)


def test_mismatched_shapes_raise_on_validate(tmp_path):
    _write(tmp_path / "image_3_BF_z0.ome.tiff", shape=(16, 16))
    _write(tmp_path / "image_3_Nucleus.ome.tiff", shape=(16, 20))
    study = discover_study(tmp_path, organelle="Nucleus")
    with pytest.raises(
        DataError,
        match=r"shapes disagree in case 3: image_3_BF_z0.ome.tiff 16x16, image_3_Nucleus.ome.tiff 16x20",
    ):
        study.validate()


def test_constant_and_empty_images_raise(tmp_path):
    _write(tmp_path / "image_4_BF_z0.ome.tiff")
    _write(tmp_path / "image_4_Nucleus.ome.tiff", value=0)
    study = discover_study(tmp_path, organelle="Nucleus")
    study.validate()  # headers only
    with pytest.raises(DataError, match=r"image_4_Nucleus.ome.tiff is constant \(every pixel is 0\)"):
        study.validate(check_content=True)
    with pytest.raises(DataError, match="empty.tif is empty"):
        check_image_content(np.zeros((0, 5)), "empty.tif")
    with pytest.raises(DataError, match="NaN"):
        check_image_content(np.array([[np.nan, 1.0]]), "nan.tif")


def test_duplicate_planes_and_mixed_modalities_raise(tmp_path):
    _write(tmp_path / "image_1_BF_z0.ome.tiff")
    _write(tmp_path / "image_1_BF_z0.tif")
    with pytest.raises(DataError, match="Two files for the same plane"):
        discover_study(tmp_path)
    (tmp_path / "image_1_BF_z0.tif").unlink()
    _write(tmp_path / "image_1_PC_z1.ome.tiff")
    with pytest.raises(DataError, match=r"mixes modalities \['BF', 'PC'\]"):
        discover_study(tmp_path)


def test_folder_layout_with_stacks(tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "targets" / "nucleus").mkdir(parents=True)
    _write(tmp_path / "inputs" / "well_A1_BF.ome.tiff", shape=(4, 16, 16))
    _write(tmp_path / "inputs" / "well_B2.tif", shape=(16, 16))
    _write(tmp_path / "targets" / "nucleus" / "well_A1_BF.tif", shape=(16, 16))
    study = discover_study(tmp_path)
    assert study.layout == "folders"
    a1, b2 = study.cases
    assert (a1.case_id, a1.modality, a1.targets.keys() == {"Nucleus"}) == ("well_A1_BF", "BF", True)
    assert [plane.index for plane in a1.planes()] == [0, 1, 2, 3]
    assert b2.planes()[0].index is None and b2.modality is None
    assert study.summary().n_planes == 5
    with pytest.raises(DataError, match=r"have no target image, e.g. well_B2.tif"):
        study.select(organelle="Nucleus")
    (tmp_path / "inputs" / "well_B2.tif").unlink()
    discover_study(tmp_path, organelle="Nucleus").validate()


def test_folder_layout_errors(tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "targets" / "golgi").mkdir(parents=True)
    _write(tmp_path / "inputs" / "a.tif")
    with pytest.raises(DataError, match=r"Target folder .*golgi: Unknown organelle"):
        discover_study(tmp_path)
    (tmp_path / "targets" / "golgi").rmdir()
    (tmp_path / "targets" / "Actin").mkdir()
    _write(tmp_path / "targets" / "Actin" / "b.tif")
    with pytest.raises(DataError, match=r"Target .*b.tif has no input image: expected inputs/b.tif"):
        discover_study(tmp_path)
