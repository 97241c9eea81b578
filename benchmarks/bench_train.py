"""Benchmark fine-tuning steps: samples/s, peak memory and model FLOP utilisation (MFU).

Trains the paper-config UNETR (preset ``unetr_paper``: ViT 768/12/12, 32 px tokens, 32 filters,
9x9 kernels, BatchNorm) and BiaPy's UNETR of the same configuration on the same random batches,
with the fine-tuning recipe: AdamW, MSE, bf16 autocast + channels-last on CUDA, fp32 on CPU.
FLOPs per step (forward + backward) are counted with ``FlopCounterMode`` on the meta device. Example::

    python benchmarks/bench_train.py --size 1024 --batch 2 --steps 10        # GPU
    python benchmarks/bench_train.py --devices cpu --size 256 --steps 2      # CPU, minutes

Prints a table and writes ``benchmarks/results/train_<device>.json``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_predict import (  # sibling script: BiaPy model, memory sampler, FLOP peaks, machine info, JSON writer
    BiapyUNETR,
    PeakRSS,
    machine,
    peak_tflops,
    precision_name,
    save_report,
)
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from napari_lightmycells.devices import autocast_dtype, select_device
from napari_lightmycells.models import UNETR2D, count_parameters, unetr_config
from napari_lightmycells.training.engine import param_groups


def step_flops(model: nn.Module, batch: int, size: int) -> tuple[int, str]:
    """FLOPs of one training step (forward + backward), counted on a meta-device copy."""
    meta_model = copy.deepcopy(model).to("meta")
    x = torch.empty(batch, 1, size, size, device="meta")
    try:
        with FlopCounterMode(display=False) as counter:
            meta_model(x).float().square().mean().backward()
        return counter.get_total_flops(), "forward + backward (FlopCounterMode)"
    except (NotImplementedError, RuntimeError):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            meta_model(x)
        return 3 * counter.get_total_flops(), "3 x forward (FlopCounterMode; backward not countable on meta)"


def train_steps(
    model: nn.Module,
    precision: str,
    device: torch.device,
    batch: int,
    size: int,
    steps: int,
    warmup: int = 1,
    compile_backend: str | None = None,
) -> dict:
    """Time ``steps`` optimiser steps after ``warmup`` untimed ones, as the training engine takes them
    (AdamW, channels-last on CUDA, GradScaler in fp16), through ``torch.compile`` if a backend is given;
    raises if the loss is not finite."""
    amp = autocast_dtype(device, precision)
    channels_last = device.type == "cuda"
    model = model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(param_groups(model, 0.02), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    forward = torch.compile(model, backend=compile_backend) if compile_backend else model
    generator = torch.Generator().manual_seed(0)
    batches = [
        tuple(torch.randn(batch, 1, size, size, generator=generator) for _ in range(2)) for _ in range(2)
    ]
    losses = []

    def step(index: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        image, target = (t.to(device, non_blocking=True) for t in batches[index % 2])
        if channels_last:
            image, target = (t.contiguous(memory_format=torch.channels_last) for t in (image, target))
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = F.mse_loss(forward(image).float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach())

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for index in range(warmup):
        step(index)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss:
        start = time.perf_counter()
        for index in range(steps):
            step(index)
        sync()
        seconds = (time.perf_counter() - start) / steps
    values = [float(loss) for loss in losses]
    if not all(math.isfinite(value) for value in values):
        raise FloatingPointError(f"training loss not finite: {values}")
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
    return {
        "seconds_per_step": seconds,
        "peak_memory_mib": memory / 2**20,
        "memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "losses": values,
        **({"grad_scale": scaler.get_scale()} if scaler.is_enabled() else {}),
    }


def bench(name: str, model: nn.Module, precision: str, device: torch.device, args) -> dict:
    """One row of the table: ``train_steps`` timing with FLOPs, throughput and MFU."""
    flops, flops_source = step_flops(model, args.batch, args.size)
    parameters = count_parameters(model)
    timing = train_steps(
        model, precision, device, args.batch, args.size, args.steps, args.warmup, args.compile
    )
    peak, peak_source = peak_tflops(device, args.peak_tflops, precision_name(device, precision))
    achieved = flops / timing["seconds_per_step"] / 1e12
    return {
        "model": name,
        "precision": precision_name(device, precision),
        "batch": args.batch,
        "compiled": bool(args.compile),
        "parameters": parameters,
        **timing,
        "samples_per_s": args.batch / timing["seconds_per_step"],
        "tflop_per_step": flops / 1e12,
        "flops_source": flops_source,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "mfu": achieved / peak if peak else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="square patch side (the paper: 1024)")
    parser.add_argument("--batch", type=int, default=1, help="samples per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--preset", default="unetr_paper")
    parser.add_argument("--devices", nargs="+", default=["cuda"] if torch.cuda.is_available() else ["cpu"])
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="peak FLOP rate of the device (TFLOP/s)"
    )
    parser.add_argument("--no-biapy", action="store_true", help="skip BiaPy's UNETR even if importable")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        default=None,
        metavar="BACKEND",
        help="train through torch.compile (backend: inductor)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["auto", "bf16"],
        help="our model's precisions to time (BiaPy is timed in fp32)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    for device_name in args.devices:
        device = select_device(device_name)
        torch.manual_seed(0)
        runs = [(f"ours ({args.preset})", precision) for precision in dict.fromkeys(args.precisions)]
        runs += [] if args.no_biapy else [("biapy UNETR", "fp32")]
        rows = []
        for name, precision in runs:
            try:  # a fresh model per run: the same initial weights and optimiser state for every precision
                torch.manual_seed(0)
                config = unetr_config(args.preset, crop_size=args.size)
                model = BiapyUNETR(config) if name.startswith("biapy") else UNETR2D(config)
            except ImportError:
                print("biapy is not importable: skipping its UNETR")
                continue
            rows.append(bench(name, model, precision, device, args))
            del model
        report = {
            **machine(device),
            "channels_last": device.type == "cuda",
            "size": args.size,
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "note": ""
            if args.size == 1024
            else f"patch {args.size}² instead of the paper's 1024² to keep the run short",
            "results": rows,
        }
        print_table(report)
        save_report(report, args.output_dir, f"train_{device.type}")


def print_table(report: dict) -> None:
    print(
        f"\n{report['device']} ({report['device_name']}), {report['size']}² patches, batch {report['batch']}, "
        f"{report['steps']} timed steps"
    )
    header = f"{'model':<24}{'precision':>10}{'s/step':>9}{'samples/s':>11}{'peak MiB':>10}{'TFLOP/step':>12}{'TFLOP/s':>9}{'MFU %':>7}"
    print(header + "\n" + "-" * len(header))
    for row in report["results"]:
        mfu = f"{100 * row['mfu']:.1f}" if row["mfu"] is not None else "n/a"
        print(
            f"{row['model']:<24}{row['precision']:>10}{row['seconds_per_step']:>9.2f}{row['samples_per_s']:>11.3f}"
            f"{row['peak_memory_mib']:>10.0f}{row['tflop_per_step']:>12.3f}{row['achieved_tflops']:>9.3f}{mfu:>7}"
        )


if __name__ == "__main__":
    main()
