"""A 16k x 16k zarr image is predicted tile by tile with bounded memory.

The model is a 3x3 mean filter (an ``nn.Module`` with a token size, like any model the Predictor runs):
the tiny UNETR computes ~0.3 Mpixel/s on one CPU thread here, 15 min for this image. A mean filter's
output does not depend on the normalisation statistics, so the lazy output must match the in-memory
prediction of a crop to float precision away from the crop's border.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, resource, sys, time
import numpy as np, torch, zarr
from torch import nn
from napari_lightmycells.inference.predictor import Predictor

torch.set_num_threads(1)


class MeanFilter(nn.Module):
    token_size = 8

    def forward(self, x):
        return nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


def rss_mib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


folder, side = sys.argv[1], 16384
image = zarr.create_array(f"{folder}/in.zarr", shape=(side, side), chunks=(1024, 1024), dtype="uint8")
columns = (np.arange(side) % 251).astype(np.uint8)
for row in range(0, side, 1024):  # simple, compressible data: stripes shifted per row block
    image[row : row + 1024] = np.roll(columns, row // 1024)[None] + np.arange(1024, dtype=np.uint8)[:, None] % 5
out = zarr.create_array(
    f"{folder}/out.zarr", shape=(side, side), chunks=(1024, 1024), dtype="float32", fill_value=0, compressors=None
)
predictor = Predictor({"Nucleus": MeanFilter()}, "cpu", tile_size=2048)
before = rss_mib("VmRSS")
start = time.perf_counter()
predictor.predict(image, out={"Nucleus": out})
seconds = time.perf_counter() - start
growth = rss_mib("VmHWM") - before
crop = (slice(9000, 9600), slice(3000, 3700))
expected = predictor.predict(np.asarray(image[crop]))["Nucleus"][1:-1, 1:-1]
difference = float(np.abs(out[crop][1:-1, 1:-1] - expected).max())
print(json.dumps({"seconds": seconds, "rss_growth_mib": growth, "max_difference": difference}))
"""


@pytest.mark.slow
def test_16k_zarr_image_is_predicted_with_bounded_memory(tmp_path):
    pytest.importorskip("zarr")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    # Holding the input (256 MiB) and the float32 output (1 GiB) would take 1280 MiB; tiles of ~2.3k px
    # and their temporaries take a few hundred.
    assert result["rss_growth_mib"] < 640
    assert result["max_difference"] < 1e-3
