import numpy as np
import pytest

from napari_lightmycells._sample_data import synthetic_case
from napari_lightmycells.data.focus import best_focus_index


def test_synthetic_case_is_a_bf_stack_and_its_nucleus_target():
    (stack, stack_kwargs, _), (target, target_kwargs, _) = synthetic_case()
    assert stack.shape == (5, 256, 256) and target.shape == (256, 256)
    assert stack_kwargs["name"] == "image_1 BF (z-stack)" and stack_kwargs["metadata"]["modality"] == "BF"
    assert target_kwargs["name"] == "image_1 Nucleus" and target_kwargs["colormap"] == "blue"
    assert stack_kwargs["scale"][1:] == pytest.approx((0.325, 0.325))
    assert best_focus_index(stack) == 2  # sharpest in the middle
    assert np.ptp(target) > 0
