"""Benchmark predicting a huge zarr image (16k x 16k by default) into an OME-Zarr: time and peak memory.

Runs a preset (``unetr_tiny`` by default; random weights, fixed seed) through :class:`Predictor` as
``lightmycells predict`` does for an image too big for memory: tiles read from a zarr input one at a
time, normalisation statistics from a sample, the prediction written tile by tile into an OME-Zarr.
The memory reported is the growth of the process's peak RSS during the prediction (holding the input
and the float32 output would take ``side² x (itemsize + 4)`` bytes). Example::

    python benchmarks/bench_huge.py --side 8192             # a quick run
    nice -n 10 python benchmarks/bench_huge.py --threads 1  # 16k x 16k on one CPU thread

Prints a summary and writes ``benchmarks/results/huge_<device>_<side>.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from bench_predict import PeakRSS, machine, save_report  # sibling script: RSS sampler, machine, JSON
from scipy.ndimage import gaussian_filter

from napari_lightmycells.cli.progress import ProgressBar, set_log_level
from napari_lightmycells.data.lazy import ome_zarr_output
from napari_lightmycells.devices import select_device
from napari_lightmycells.inference.predictor import Predictor
from napari_lightmycells.inference.tiling import DEFAULT_OVERLAP
from napari_lightmycells.models import create_model

MIB = 2**20
STRIP = 1024  # rows written at a time when making the input (its zarr chunk side too)


def make_input(path: Path, side: int, seed: int = 0):
    """A ``side x side`` uint16 zarr image of smooth random texture, written strip by strip."""
    rng = np.random.default_rng(seed)
    texture = gaussian_filter(rng.normal(size=(STRIP, STRIP)), 4)
    texture = ((texture - texture.min()) / np.ptp(texture) * 4000 + 100).astype(np.uint16)
    image = zarr.create_array(path, shape=(side, side), chunks=(STRIP, STRIP), dtype="uint16")
    for row in range(0, side, STRIP):
        rows = min(STRIP, side - row)
        strip = np.tile(np.roll(texture, row // STRIP * 97, axis=1), (1, -(-side // STRIP)))
        image[row : row + rows] = strip[:rows, :side]
    return image


def bench(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    device = select_device(args.device)
    predictor = Predictor(
        {"Nucleus": create_model(args.preset)},
        device,
        tile_size=args.tile or None,
        overlap=args.overlap,
        batch_size=args.batch,
        precision=args.precision,
    )
    shape = (args.side, args.side)
    grid = predictor.tile_grid(shape, "Nucleus")
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench_huge_") as folder:
        image = make_input(Path(folder) / "input.zarr", args.side)
        print(
            f"{args.preset}: {args.side}² uint16 zarr, {len(grid)} tiles of {grid.tile}², overlap {grid.overlap} px"
        )
        with ome_zarr_output(Path(folder) / "Nucleus.ome.zarr", shape, None, "Nucleus") as out:
            with PeakRSS(interval_s=0.05) as rss:
                before = rss.peak
                start = time.perf_counter()
                predictor.predict(image, out={"Nucleus": out}, callbacks=[ProgressBar("predict")])
                seconds = time.perf_counter() - start
            corner = np.asarray(out[:256, :256])
    if not np.isfinite(corner).all() or not corner.any():
        raise RuntimeError("the output's first corner was not written")
    return {
        **machine(device),
        "load_average_1min_before": load_before,
        "preset": args.preset,
        "side": args.side,
        "input": "uint16 zarr, 1024² chunks",
        "output": "float32 OME-Zarr, 1024² chunks",
        "precision": args.precision,
        "batch": args.batch,
        "tile_requested": args.tile or None,
        "tile": grid.tile,
        "overlap": args.overlap,
        "overlap_px": grid.overlap,
        "tiles": len(grid),
        "computed_over_image_pixels": grid.computed_pixels() / args.side**2,
        "seconds": seconds,
        "megapixels_per_s": args.side**2 / 1e6 / seconds,
        "peak_rss_growth_mib": (rss.peak - before) / MIB,
        "in_memory_mib": args.side**2 * (2 + 4) / MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--preset", default="unetr_tiny")
    parser.add_argument(
        "--tile",
        type=int,
        default=256,
        help="requested tile side (0: the model's crop size); unetr_tiny's 64 px crops make ~65k tiles on 16k², "
        "where the output's chunk I/O (~60 ms a tile here) dominates",
    )
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workdir", type=Path, default=None, help="where the input and output are written")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    set_log_level(logging.INFO)  # the CLI's progress bar, or a line with the ETA every 30 s
    report = bench(args)
    print(
        f"{report['preset']} on {report['side']}²: {report['seconds']:.0f} s, "
        f"{report['megapixels_per_s']:.2f} Mpixel/s, {report['tiles']} tiles of {report['tile']}², "
        f"peak RSS +{report['peak_rss_growth_mib']:.0f} MiB (in memory: {report['in_memory_mib']:.0f} MiB)"
    )
    save_report(report, args.output_dir, f"huge_{report['device'].split(':')[0]}_{args.side}")


if __name__ == "__main__":
    main()
