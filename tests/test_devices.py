import pytest
import torch

from napari_lightmycells.devices import autocast_dtype, available_devices, select_device
from napari_lightmycells.errors import ModelError


def test_auto_picks_an_available_device_and_cpu_is_always_there():
    assert available_devices()[-1] == "cpu"
    assert str(select_device("auto")) == available_devices()[0]
    assert select_device("cpu") == torch.device("cpu")


def test_unknown_or_missing_devices_are_clear_errors():
    with pytest.raises(ModelError, match="Unknown device 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="torch sees no CUDA GPU"):
            select_device("cuda")


def test_precision_choices():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None and autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    with pytest.raises(ModelError, match="fp16 needs a CUDA GPU"):
        autocast_dtype(cpu, "fp16")
    with pytest.raises(ModelError, match="Unknown precision"):
        autocast_dtype(cpu, "int8")
