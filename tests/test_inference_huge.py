"""A 16k x 16k zarr image is predicted by a UNETR tile by tile with bounded memory.

The model is a micro UNETR (random weights, fixed seed) saved as a checkpoint and loaded by the
:class:`Predictor` like any other: 32 px tokens, embedding 16, depth 4 (one block per decoder skip),
one head, 2 decoder filters, 3x3 kernels, BatchNorm decoder, 512 px training crops. Its forward pass
runs ~5 Mpixel/s on one CPU thread, so the test takes ~85 s of CPU time (~2 min on two busy cores).
``unetr_tiny`` runs ~1 Mpixel/s: ``benchmarks/bench_huge.py`` predicts this size with it into an
OME-Zarr in 24 min on one busy thread (0.19 Mpixel/s end to end, default context, RSS +137 MiB).
Here peak RSS must grow by less than 256 MiB, the size of the uint8 input alone (the float32 output
would add 1 GiB); measured: 86 MiB.

The lazy path z-scores with statistics from an every-8th-pixel sample, the in-memory path with those
of the whole array it gets. The image is a stationary texture (8x8-pixel blocks of random intensities
repeating every 512 px), so a 512 px crop, the whole image and its sample hold the same intensities in
the same proportions: the same statistics. Where a lazy 512 px tile is the only one covering a pixel
(away from its overlaps), its output must then equal the in-memory prediction of that tile's crop.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys, time
import numpy as np, torch, zarr
from napari_lightmycells.checkpoint import save_checkpoint
from napari_lightmycells.inference.predictor import Predictor
from napari_lightmycells.models import UNETRConfig, ViTConfig, build_model

torch.set_num_threads(1)


def rss_mib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


folder, side, tile = sys.argv[1], 16384, 512
torch.manual_seed(0)
encoder = ViTConfig(crop_size=tile, token_size=32, embed_dim=16, depth=4, num_heads=1)
model = build_model(UNETRConfig(encoder=encoder, decoder_filters=2, kernel_size=3))
checkpoint = save_checkpoint(f"{folder}/micro.pt", model, organelle="Nucleus")

blocks = np.random.default_rng(0).integers(0, 256, (tile // 8, tile // 8), dtype=np.uint8)
strip = np.tile(np.kron(blocks, np.ones((8, 8), np.uint8)), (1, side // tile))
image = zarr.create_array(f"{folder}/in.zarr", shape=(side, side), chunks=(tile, tile), dtype="uint8")
for row in range(0, side, tile):
    image[row : row + tile] = strip
out = zarr.create_array(
    f"{folder}/out.zarr", shape=(side, side), chunks=(tile, tile), dtype="float32", fill_value=0, compressors=None
)
# Exactly 512 px tiles (the period), 32 px overlap: 35 x 35 tiles.
predictor = Predictor({"Nucleus": checkpoint}, "cpu", tile_size=tile, overlap=1 / 16, tile_growth=1)
before = rss_mib("VmRSS")
start = time.perf_counter()
predictor.predict(image, out={"Nucleus": out})
seconds = time.perf_counter() - start
growth = rss_mib("VmHWM") - before

grid = predictor.tile_grid((side, side), "Nucleus")
i = len(grid.ys) // 2  # a middle tile; its pixels outside its neighbours' tiles
y, x = grid.ys[i], grid.xs[i + 1]
rows, columns = slice(grid.ys[i - 1] + tile, grid.ys[i + 1]), slice(grid.xs[i] + tile, grid.xs[i + 2])
alone = predictor.predict(np.asarray(image[y : y + tile, x : x + tile]))["Nucleus"]
expected = alone[rows.start - y : rows.stop - y, columns.start - x : columns.stop - x]
unwritten = sum(int((out[row : row + tile] == 0).sum()) for row in range(0, side, tile))
print(json.dumps({
    "seconds": seconds,
    "tiles": len(grid),
    "rss_growth_mib": growth,
    "compared": expected.shape,
    "max_difference": float(np.abs(out[rows, columns] - expected).max()),
    "spread": float(expected.max() - expected.min()),
    "unwritten": unwritten,
}))
"""


@pytest.mark.slow
def test_16k_zarr_image_is_predicted_by_a_unetr_with_bounded_memory(tmp_path):
    pytest.importorskip("zarr")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    assert result["tiles"] == 35 * 35 and result["unwritten"] == 0
    # Holding the input (256 MiB) and the float32 output (1 GiB) would take 1280 MiB; one 512 px tile,
    # its activations and the zarr chunks it touches take ~90 MiB.
    assert result["rss_growth_mib"] < 256
    # Same tile, same statistics: equal to float rounding (a mean 0.1 % off moves it by ~0.1).
    assert min(result["compared"]) > 400 and result["spread"] > 1
    assert result["max_difference"] < 1e-3
