"""Data loader throughput (samples/s) for 1024x1024 patches from a synthetic study of 2048x2048 images.

Each configuration reads patches with a DataLoader (0 or 2 workers) from a freshly written synthetic
LightMyCells study (uint16 OME-TIFF), optionally applying the batched augmentations on the CPU in the
main process (as training would on the GPU). Prints a table and saves benchmarks/results/dataloader.json.

    python benchmarks/bench_dataloader.py [--size 2048 --patch 1024 --samples 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from napari_lightmycells.data.augment import AugmentConfig, Augmenter
from napari_lightmycells.data.dataset import PairedDataset
from napari_lightmycells.data.study import discover_study
from napari_lightmycells.data.synthetic import make_synthetic_study

RESULTS = Path(__file__).parent / "results" / "dataloader.json"


def measure(cases, patch: int, samples: int, workers: int, augment: bool, batch_size: int) -> float:
    """Samples per second over ``samples`` patches, after one warm-up batch."""
    dataset = PairedDataset(
        cases, "Nucleus", crop_size=patch, samples_per_case=samples // len(cases) + batch_size
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=True)
    augmenter = Augmenter(AugmentConfig(enabled=augment), generator=torch.Generator().manual_seed(0))
    batches = iter(loader)
    augmenter(*next(batches))  # warm-up: worker start, first reads
    start, seen = time.perf_counter(), 0
    while seen < samples:
        image, target = next(batches)
        augmenter(image, target)
        seen += image.shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="synthetic image size (pixels)")
    parser.add_argument("--patch", type=int, default=1024, help="crop size (pixels)")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--planes", type=int, default=3)
    parser.add_argument("--samples", type=int, default=32, help="patches timed per configuration")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        make_synthetic_study(folder, n_cases=args.cases, size=args.size, n_planes=args.planes)
        generation_s = time.perf_counter() - start
        cases = discover_study(folder, organelle="Nucleus").cases
        for workers in args.workers:
            for augment in (False, True):
                rate = measure(cases, args.patch, args.samples, workers, augment, args.batch_size)
                rows.append({"workers": workers, "augmentation": augment, "samples_per_s": round(rate, 2)})
                print(f"workers={workers} augmentation={augment!s:<5} {rate:7.2f} samples/s", flush=True)

    print(f"\n{'workers':>7} | {'augmentation':>12} | {'samples/s':>9}")
    print(f"{'-' * 7}-+-{'-' * 12}-+-{'-' * 9}")
    for row in rows:
        print(
            f"{row['workers']:>7} | {'yes' if row['augmentation'] else 'no':>12} | "
            f"{row['samples_per_s']:>9.2f}"
        )
    report = {
        "benchmark": "dataloader",
        "image_size": args.size,
        "crop_size": args.patch,
        "cases": args.cases,
        "planes_per_case": args.planes,
        "batch_size": args.batch_size,
        "samples_timed": args.samples,
        "synthetic_study_seconds": round(generation_s, 2),
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nSaved {args.out}")


if __name__ == "__main__":
    main()
