"""Benchmark tiled prediction: megapixels/s, peak memory and fraction of peak FLOP rate.

Runs the paper-config UNETR (preset ``unetr_paper``) through :class:`Predictor` on a synthetic image,
and BiaPy's own UNETR on the same tiles when ``biapy`` is importable. Weights are random (speed does
not depend on them). Example::

    python benchmarks/bench_predict.py --size 2048 --tile 1024 --repeats 1

Prints a table and writes ``benchmarks/results/predict_<device>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from napari_lightmycells.devices import autocast_dtype, select_device
from napari_lightmycells.inference.predictor import Predictor
from napari_lightmycells.inference.tiling import DEFAULT_OVERLAP, MAX_TILE_GROWTH, plan_tiles
from napari_lightmycells.models import UNETRConfig, create_model, unetr_config
from napari_lightmycells.models.biapy import biapy_unetr

# Dense (no sparsity) bf16 tensor-core peaks (TFLOP/s) from NVIDIA data sheets, matched in this order
# against the device name ("NVIDIA H100 80GB HBM3" is the SXM card).
CUDA_BF16_PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
}


class BiapyUNETR(nn.Module):
    """BiaPy's UNETR built with the hyper-parameters of one of our ``UNETRConfig`` (the paper's by
    default), exposing ``token_size`` and returning a tensor (BiaPy's construction messages are silenced)."""

    def __init__(self, config: UNETRConfig | None = None):
        super().__init__()
        config = config or unetr_config("unetr_paper")
        self.token_size = config.encoder.token_size
        self.hidden_mult = config.resolved_skip_blocks()[0]  # BiaPy's ViT_hidd_mult
        self.net = biapy_unetr(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, dict):
            out = out["pred"]
        return out[0] if isinstance(out, (list, tuple)) else out


class PeakRSS:
    """Samples the process's resident memory in a thread; ``peak`` is the maximum seen (bytes)."""

    def __init__(self, interval_s: float = 0.01):
        self.interval_s, self.peak = interval_s, 0
        self._process, self._stop = psutil.Process(), threading.Event()

    def __enter__(self) -> PeakRSS:
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._process.memory_info().rss)


def tile_flops(model: nn.Module, tile: int) -> int:
    """FLOPs of one forward pass on a ``1x1xtile x tile`` input, counted on the meta device."""
    meta_model = copy.deepcopy(model).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta_model(torch.empty(1, 1, tile, tile, device="meta"))
    return counter.get_total_flops()


def precision_name(device: torch.device, precision: str) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast_dtype(device, precision)]


def cuda_bf16_peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU from its name (``torch.cuda.get_device_name``); ``None`` if unknown."""
    return next((peak for key, peak in CUDA_BF16_PEAK_TFLOPS.items() if key in device_name), None)


def peak_tflops(
    device: torch.device, override: float | None, precision: str = "fp32"
) -> tuple[float | None, str]:
    """Peak FLOP rate of ``device`` in ``precision`` (CUDA: the bf16 data-sheet figure) and its source."""
    if override:
        return override, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = cuda_bf16_peak_tflops(name)
        return peak, f"bf16 dense data sheet ({name})" if peak else f"unknown GPU {name}: pass --peak-tflops"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flops_per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 8  # fp32, 2 FMA units
    if precision == "bf16" and "amx_bf16" in flags:
        flops_per_cycle = 1024  # AMX: one 16x32 by 32x16 bf16 tile product (16384 FLOP) every 16 cycles
    elif precision == "bf16" and "avx512_bf16" in flags:
        flops_per_cycle *= 2  # VDPBF16PS: two bf16 products per fp32 lane
    freq = psutil.cpu_freq()
    ghz = (freq.max or freq.current) / 1000 if freq else 2.5
    cores = torch.get_num_threads()
    source = f"estimate: {cores} threads x {ghz:.2f} GHz x {flops_per_cycle} {precision} FLOP/cycle"
    return cores * ghz * flops_per_cycle / 1000, source


def machine(device: torch.device) -> dict:
    """What ran the benchmark (load average: other processes skew CPU timings)."""
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }


def save_report(report: dict, output_dir: Path, name: str) -> Path:
    """Write ``report`` as ``<output_dir>/<name>.json`` and say where."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{name}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"saved {path}")
    return path


def bench(
    name: str,
    models: dict[str, nn.Module],
    precision: str,
    image: np.ndarray,
    device: torch.device,
    args,
    tile_growth: float = MAX_TILE_GROWTH,
) -> dict:
    """Time :class:`Predictor` running ``models`` (organelle -> model) on ``image`` with its tile plan
    (``tile_growth=1``: exactly ``args.tile`` px tiles, as BiaPy's fixed-size models need); FLOPs are
    counted on the uncompiled models for the tiles planned."""
    predictor = Predictor(
        models,
        device=device,
        tile_size=args.tile,
        overlap=args.overlap,
        batch_size=args.batch,
        precision=precision,
        tile_growth=tile_growth,
    )
    compiled = any(hasattr(model, "_orig_mod") for model in models.values())
    if device.type == "cuda" or compiled:  # warm-up on the timed shapes (cuDNN autotuning, torch.compile)
        predictor.predict(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
    times = []
    with PeakRSS() as rss:
        for _ in range(args.repeats):
            start = time.perf_counter()
            predictor.predict(image)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    grids = [
        plan_tiles(image.shape, args.tile, model.token_size, args.overlap, tile_growth)
        for model in models.values()
    ]
    flops = sum(
        len(grid) * tile_flops(getattr(model, "_orig_mod", model), grid.tile)
        for grid, model in zip(grids, models.values())
    )
    peak, peak_source = peak_tflops(device, args.peak_tflops, precision_name(device, precision))
    achieved = flops / seconds / 1e12
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
    return {
        "model": name,
        "organelles": list(predictor.models),
        "precision": precision_name(device, precision),
        "seconds": seconds,
        "images_per_s": 1 / seconds,
        "megapixels_per_s": image.size / 1e6 / seconds,
        "peak_memory_mib": memory / 2**20,
        "memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "tiles": sum(len(grid) for grid in grids),
        "tile_sizes": sorted({grid.tile for grid in grids}),
        "tflop_per_image": flops / 1e12,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "fraction_of_peak": achieved / peak if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--preset", default="unetr_paper")
    parser.add_argument(
        "--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="peak FLOP rate of the device (TFLOP/s)"
    )
    parser.add_argument("--no-biapy", action="store_true", help="skip BiaPy's UNETR even if importable")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["auto", "bf16"],
        help="our model's precisions to time (BiaPy runs in fp32, as it does by default)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    image = rng.normal(500, 50, size=(args.size, args.size)).astype(np.float32)
    torch.manual_seed(0)
    for device_name in args.devices:
        device = select_device(device_name)
        ours = create_model(args.preset)
        runs = [(f"ours ({args.preset})", ours, precision) for precision in dict.fromkeys(args.precisions)]
        if not args.no_biapy:
            try:
                runs.append(
                    ("biapy UNETR", BiapyUNETR(unetr_config(args.preset, crop_size=args.tile)), "fp32")
                )
            except ImportError:
                print("biapy is not importable: skipping its UNETR")
        rows = [
            bench(
                name,
                {"Nucleus": model},
                precision,
                image,
                device,
                args,
                1.0 if isinstance(model, BiapyUNETR) else MAX_TILE_GROWTH,
            )
            for name, model, precision in runs
        ]
        report = {
            **machine(device),
            "size": args.size,
            "tile": args.tile,
            "overlap": args.overlap,
            "batch": args.batch,
            "repeats": args.repeats,
            "results": rows,
        }
        print_table(report)
        save_report(report, args.output_dir, f"predict_{device.type}")


def print_table(report: dict) -> None:
    print(
        f"\n{report['device']} ({report['device_name']}), {report['size']}² image, {report['tile']}² tiles, "
        f"batch {report['batch']}"
    )
    header = f"{'model':<24}{'precision':>15}{'s/image':>10}{'MP/s':>10}{'peak MiB':>10}{'TFLOP':>8}{'TFLOP/s':>9}{'% peak':>8}"
    print(header + "\n" + "-" * len(header))
    for row in report["results"]:
        fraction = f"{100 * row['fraction_of_peak']:.1f}" if row["fraction_of_peak"] is not None else "n/a"
        print(
            f"{row['model']:<24}{row['precision']:>15}{row['seconds']:>10.2f}{row['megapixels_per_s']:>10.3f}"
            f"{row['peak_memory_mib']:>10.0f}{row['tflop_per_image']:>8.2f}{row['achieved_tflops']:>9.3f}"
            f"{fraction:>8}"
        )


if __name__ == "__main__":
    main()
