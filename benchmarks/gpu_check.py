"""One device check: CUDA parity with BiaPy, prediction and training speed, fp16 + GradScaler, DDP.

Run ``bash benchmarks/gpu_check.sh`` on a GPU machine (under 8 minutes on one H100). Sections, each
with its own time budget; a section that fails (out of memory, compile error, timeout) is recorded and
the next one runs:

* ``parity``: BiaPy's UNETR (installed version, paper configuration) against ours converted from its
  weights, fp32 with TF32 off (goal: max abs diff < 1e-4), ours in bf16 (relative error reported); and
  the committed BiaPy fixtures (``tests/fixtures/*_io.pt``) on the device.
* ``predict``: a 2048² image, 4 organelles (paper presets), 1024² tiles, through :class:`Predictor`:
  ours (auto precision: bf16 on CUDA, channels-last, cuDNN autotuning) eager and with torch.compile,
  BiaPy's model in fp32 (TF32 as PyTorch defaults; cuDNN autotuning on, as BiaPy sets it).
* ``train``: a training step at 1024² with the largest batch that fits (doubling until out of memory),
  ours vs BiaPy: samples/s, MFU, peak memory.
* ``fp16``: a few training steps in fp16 with GradScaler (CUDA only).
* ``ddp``: DistributedDataParallel training steps with NCCL on every GPU through torchrun (needs two
  GPUs; on the CPU, one gloo process exercises the code).

``--tiny`` runs the same sections on the CPU with the tiny preset in seconds (tests/test_gpu_check.py).
The JSON and a markdown summary are rewritten after every measurement, so a run cut short keeps what it
measured: ``benchmarks/results/gpu_check_<device>[_tiny].{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from bench_predict import BiapyUNETR, machine, save_report  # sibling scripts
from bench_predict import bench as bench_predict
from bench_train import bench as bench_train
from bench_train import train_steps
from gpu_check_report import render_markdown
from torch.nn.parallel import DistributedDataParallel

from napari_lightmycells.devices import autocast_dtype, is_out_of_memory, select_device
from napari_lightmycells.inference.tiling import DEFAULT_OVERLAP, MAX_TILE_GROWTH, count_tiles, plan_tiles
from napari_lightmycells.loading import load_model
from napari_lightmycells.models import ORGANELLE_PRESETS, UNETR2D, unetr_config
from napari_lightmycells.models.biapy import unetr_from_biapy
from napari_lightmycells.training import distributed
from napari_lightmycells.training.engine import param_groups

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one kind of run: the paper's configuration on a GPU, or tiny on a CPU."""

    presets: dict[str, str]  # organelle -> UNETR preset; the first one is used for parity and training
    image: int  # side of the predicted image
    tile: int  # prediction tile (the model's training size)
    train_size: int
    max_batch: int  # the batch search stops here
    parity_batch: int
    steps: int  # timed training steps
    repeats: int  # timed predictions
    budgets: dict[str, float] = field(default_factory=dict)  # seconds per section
    compile_backend: str = "inductor"


PROFILES = {
    "paper": Profile(
        presets=dict(ORGANELLE_PRESETS),
        image=2048,
        tile=1024,
        train_size=1024,
        max_batch=256,
        parity_batch=1,
        steps=5,
        repeats=3,
        budgets={"parity": 40, "predict": 170, "train": 180, "fp16": 35, "ddp": 30},
    ),
    "tiny": Profile(
        presets=dict.fromkeys(ORGANELLE_PRESETS, "unetr_tiny"),
        image=128,
        tile=64,
        train_size=64,
        max_batch=4,
        parity_batch=2,
        steps=2,
        repeats=1,
        budgets=dict.fromkeys(["parity", "predict", "train", "fp16", "ddp"], 120),
        compile_backend="eager",  # CPU code generation takes minutes; tracing alone keeps the path tested
    ),
}

# Goals from the issue, checked on CUDA only (speed goals mean nothing on a CPU).
GOALS = {
    "predict_speedup_vs_biapy": (">=", 3.0, "prediction: ours / BiaPy images/s"),
    "predict_fraction_of_peak": (">=", 0.40, "prediction: fraction of the bf16 dense peak"),
    "predict_seconds_per_image": ("<", 0.25, "prediction: s per image (2048² on GPU), 4 organelles"),
    "train_speedup_vs_biapy": (">=", 2.0, "training: ours / BiaPy samples/s (each at its largest batch)"),
    "train_mfu": (">=", 0.35, "training: model FLOP utilisation (bf16 dense peak)"),
}


class SectionTimeout(BaseException):
    """A section ran past its budget (a ``BaseException``, so that no ``except Exception`` swallows it)."""


class Skipped(Exception):
    """A section does not apply on this machine; the message says why."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`SectionTimeout` in the main thread after ``seconds`` (SIGALRM; no limit elsewhere)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise SectionTimeout(f"ran past its {seconds:.0f} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def cuda_flags(benchmark: bool, tf32_matmul: bool, tf32_cudnn: bool) -> Iterator[dict]:
    """Set cuDNN autotuning and TF32 for a block, restoring the previous values after it."""
    backends = torch.backends
    saved = (backends.cudnn.benchmark, backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32)
    backends.cudnn.benchmark, backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32 = (
        benchmark,
        tf32_matmul,
        tf32_cudnn,
    )
    try:
        yield {"cudnn_benchmark": benchmark, "tf32_matmul": tf32_matmul, "tf32_cudnn": tf32_cudnn}
    finally:
        backends.cudnn.benchmark, backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32 = saved


def ours_flags() -> contextlib.AbstractContextManager:
    """What our training engine sets on CUDA: cuDNN autotuning and TF32."""
    return cuda_flags(benchmark=True, tf32_matmul=True, tf32_cudnn=True)


def biapy_flags() -> contextlib.AbstractContextManager:
    """BiaPy turns cuDNN autotuning on and leaves TF32 at PyTorch's defaults (matmul off, cuDNN on)."""
    return cuda_flags(benchmark=True, tf32_matmul=False, tf32_cudnn=True)


def exact_flags() -> contextlib.AbstractContextManager:
    """Full fp32 (no TF32) and deterministic algorithm choice, for parity."""
    return cuda_flags(benchmark=False, tf32_matmul=False, tf32_cudnn=False)


def free_memory() -> None:
    """Return cached GPU memory after a measurement (collecting cycles first: they may hold tensors)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def largest_batch(try_batch: Callable[[int], None], max_batch: int) -> int:
    """The largest power of two up to ``max_batch`` for which ``try_batch`` runs without running out of
    memory (other errors propagate); raises ``torch.OutOfMemoryError`` if not even 1 fits."""
    batch, largest = 1, 0
    while batch <= max_batch:
        try:
            try_batch(batch)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            break
        finally:
            free_memory()
        largest, batch = batch, batch * 2
    if not largest:
        raise torch.OutOfMemoryError("not even a batch of 1 fits")
    return largest


class Check:
    """The report being built: sections run in turn and everything is saved after each measurement."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.profile = PROFILES["tiny" if args.tiny else "paper"]
        self.device = select_device(args.device)
        self.name = f"gpu_check_{self.device.type}" + ("_tiny" if args.tiny else "")
        self.started = time.perf_counter()
        self.report = {
            "check": "tiny" if args.tiny else "paper",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **machine(self.device),
            **software(self.device),
            "sections": {},
            "goals": [],
        }

    def run(self, name: str, section: Callable[[Check, list], None]) -> None:
        """Run one section under its budget; record its rows, status and any error."""
        budget = self.args.budget.get(name, self.profile.budgets[name])
        self.deadline = time.perf_counter() + budget
        record = {"status": "running", "budget_s": budget, "results": []}
        self.report["sections"][name] = record
        start = time.perf_counter()
        print(f"== {name} (budget {budget:g} s)", flush=True)
        try:
            with time_limit(budget):
                section(self, record["results"])
            record["status"] = "ok"
        except Skipped as exc:
            record.update(status="skipped", reason=str(exc))
        except SectionTimeout as exc:
            record.update(status="timeout", error=str(exc))
        except Exception as exc:  # recorded; the next section still runs
            record.update(status="failed", error=one_line(exc), traceback=traceback.format_exc(limit=-4))
        finally:
            free_memory()
        record["seconds"] = time.perf_counter() - start
        print(
            f"   {record['status']} in {record['seconds']:.1f} s {record.get('error', record.get('reason', ''))}"
        )
        self.save()

    def add(self, rows: list, row: dict) -> None:
        rows.append(row)
        self.save()

    def attempt(self, rows: list, model: str, measure: Callable[[], dict]) -> None:
        """Add ``measure()``'s row, or a row with the error (out of memory, compile failure) instead."""
        if time.perf_counter() > self.deadline:  # in case a library swallowed the budget's alarm
            raise SectionTimeout("ran past its budget")
        try:
            row = measure()
        except Exception as exc:  # recorded as the row; the next measurement still runs
            row = {"model": model, "error": one_line(exc)}
        finally:
            free_memory()
        self.add(rows, row)

    def save(self) -> None:
        self.report["total_seconds"] = time.perf_counter() - self.started
        self.report["goals"] = evaluate_goals(self.report["sections"], self.device)
        save_report(self.report, self.args.output_dir, self.name)
        (self.args.output_dir / f"{self.name}.md").write_text(render_markdown(self.report))


def one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def software(device: torch.device) -> dict:
    try:
        from biapy import __version__ as biapy_version
    except ImportError:
        biapy_version = None
    info = {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "biapy": biapy_version,
        "gpus": torch.cuda.device_count(),
    }
    if device.type == "cuda":
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return info


# -- parity ------------------------------------------------------------------------------------------
def section_parity(check: Check, rows: list) -> None:
    device, profile = check.device, check.profile
    preset = next(iter(profile.presets.values()))
    config = unetr_config(preset, crop_size=profile.tile)
    torch.manual_seed(0)
    reference = BiapyUNETR(config)
    with torch.no_grad():  # non-trivial position embeddings and BatchNorm statistics, so that they count
        reference.net.pos_embed.normal_()
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    cfg = {
        "MODEL": {
            "ARCHITECTURE": "unetr",
            "VIT_NUM_HEADS": config.encoder.num_heads,
            "UNETR_VIT_HIDD_MULT": reference.hidden_mult,
            "ACTIVATION": config.decoder_activation,
        }
    }
    ours = unetr_from_biapy(
        {"model": reference.net.state_dict(), "cfg": cfg, "biapy_version": check.report["biapy"]}
    )
    image = torch.randn(
        profile.parity_batch, 1, profile.tile, profile.tile, generator=torch.Generator().manual_seed(0)
    )
    image = image.to(device)
    name = f"BiaPy {check.report['biapy']} UNETR, {preset} at {profile.tile}², batch {profile.parity_batch}"
    with exact_flags(), torch.no_grad():
        expected = reference.to(device).eval()(image)
        ours = ours.to(device).eval()
        check.add(rows, compare(name, "fp32", ours(image), expected, PARITY_TOLERANCE))
        ours = ours.to(memory_format=torch.channels_last)
        channels_last = image.contiguous(memory_format=torch.channels_last)
        check.add(rows, compare(name, "fp32, channels-last", ours(channels_last), expected, PARITY_TOLERANCE))
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                check.add(rows, compare(name, "bf16, channels-last", ours(channels_last), expected, None))
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                check.add(rows, compare(name, "bf16", ours(image), expected, None))
    del reference, ours, expected
    for io_path in sorted(FIXTURES.rglob("*_io.pt")):  # BiaPy checkpoints with an input and BiaPy's output
        label = f"fixture {io_path.relative_to(FIXTURES)}"
        check.attempt(
            rows, label, lambda io_path=io_path, label=label: fixture_parity(io_path, label, device)
        )


def fixture_parity(io_path: Path, label: str, device: torch.device) -> dict:
    """Our model loaded from a committed BiaPy checkpoint (``<name>.pt`` or ``.pth`` next to
    ``<name>_io.pt``) against the output BiaPy computed when the fixture was made."""
    stem = io_path.name.removesuffix("_io.pt")
    candidates = [io_path.with_name(f"{stem}{suffix}") for suffix in (".pt", ".pth")]
    checkpoint = next((path for path in candidates if path.exists()), None)
    if checkpoint is None:
        raise FileNotFoundError(f"no {stem}.pt or {stem}.pth next to {io_path.name}")
    model, card = load_model(checkpoint, device)
    pair = torch.load(io_path, weights_only=True)
    version = pair.get("biapy_version") or card.provenance.get("biapy_version", "?")
    with exact_flags(), torch.no_grad():
        output = model.eval()(pair["input"].to(device))
    return compare(f"{label} (BiaPy {version})", "fp32", output, pair["output"], PARITY_TOLERANCE)


def compare(
    reference: str, ours: str, output: torch.Tensor, expected: torch.Tensor, tolerance: float | None
) -> dict:
    """Max abs difference and relative L2 error of ``output`` against ``expected``."""
    output, expected = output.float().cpu(), expected.float().cpu()
    max_abs = float((output - expected).abs().max())
    return {
        "reference": reference,
        "ours": ours,
        "max_abs_diff": max_abs,
        "relative_error": float((output - expected).norm() / expected.norm()),
        "output_max_abs": float(expected.abs().max()),
        "tolerance": tolerance,
        "passed": None if tolerance is None else max_abs < tolerance,
    }


# -- prediction --------------------------------------------------------------------------------------
def section_predict(check: Check, rows: list) -> None:
    """Ours with the Predictor's tile plan (2048² in 3x3 tiles of 1088²) and with BiaPy's fixed 1024² tiles
    (4x4; its position embeddings do not resample), BiaPy's model, then ours compiled; batches of every tile.
    Both with the default overlap, BiaPy's context (200 px per side of a 1024² tile)."""
    device, profile, args = check.device, check.profile, check.args
    image = np.random.default_rng(0).normal(500, 50, size=(profile.image, profile.image)).astype(np.float32)
    settings = SimpleNamespace(
        tile=profile.tile,
        overlap=DEFAULT_OVERLAP,
        batch=args.predict_batch or count_tiles(image.shape, profile.tile),
        repeats=profile.repeats,
        peak_tflops=args.peak_tflops,
    )

    def build(cls: type[torch.nn.Module]) -> dict[str, torch.nn.Module]:
        torch.manual_seed(0)
        with torch.device(
            device
        ):  # initialised where they run: much faster than on the CPU for the paper size
            return {
                organelle: cls(unetr_config(preset, crop_size=profile.tile))
                for organelle, preset in profile.presets.items()
            }

    def measure(name, models, precision, flags, tile_growth=MAX_TILE_GROWTH) -> dict:
        with flags() as used:
            row = bench_predict(name, models, precision, image, device, settings, tile_growth)
            forwards = forward_seconds(models, image.shape, settings, precision, device, tile_growth)
        return {
            **row,
            "forward_seconds": forwards,
            "compiled": name.endswith("compile"),
            "batch": settings.batch,
            "overlap": settings.overlap,
            "image": profile.image,
            "tile_growth": tile_growth,
            **used,
        }

    ours = build(UNETR2D)
    check.attempt(rows, "ours", lambda: measure("ours", ours, "auto", ours_flags))
    check.attempt(
        rows, "ours, BiaPy's tiles", lambda: measure("ours, BiaPy's tiles", ours, "auto", ours_flags, 1.0)
    )
    check.attempt(
        rows, "BiaPy UNETR", lambda: measure("BiaPy UNETR", build(BiapyUNETR), "fp32", biapy_flags, 1.0)
    )

    def compiled() -> dict[str, torch.nn.Module]:
        """One compiled model per preset (organelles sharing a preset share it: same speed, compiled once)."""
        by_preset = {}
        for organelle, preset in profile.presets.items():
            by_preset.setdefault(preset, compile_for(ours[organelle], device, profile))
        return {organelle: by_preset[preset] for organelle, preset in profile.presets.items()}

    check.attempt(
        rows, "ours + torch.compile", lambda: measure("ours + torch.compile", compiled(), "auto", ours_flags)
    )


def forward_seconds(
    models: dict, shape: tuple[int, int], settings, precision: str, device: torch.device, tile_growth: float
) -> float:
    """Median time of the model forwards alone for one image (the Predictor's tile batches, random tiles):
    what remains of the end-to-end time is tiling, normalisation, blending and copies."""
    amp = autocast_dtype(device, precision)
    batches = []
    for model in models.values():
        grid = plan_tiles(shape, settings.tile, model.token_size, settings.overlap, tile_growth)
        sizes = [min(settings.batch, len(grid) - start) for start in range(0, len(grid), settings.batch)]
        memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        batches += [
            (
                model,
                torch.randn(n, 1, grid.tile, grid.tile, device=device).contiguous(
                    memory_format=memory_format
                ),
            )
            for n in sizes
        ]
    autocast = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()  # as the Predictor
    times = []
    with torch.inference_mode(), autocast:
        for repeat in range(-1, settings.repeats):  # -1: untimed, in case a shape is new to torch.compile
            start = time.perf_counter()
            for model, tiles in batches:
                model(tiles)
            sync(device)
            if repeat >= 0:
                times.append(time.perf_counter() - start)
    return float(np.median(times))


def compile_for(model: torch.nn.Module, device: torch.device, profile: Profile) -> torch.nn.Module:
    """``torch.compile`` a model already placed as :class:`Predictor` places it."""
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model, backend=profile.compile_backend, dynamic=False)


# -- training ----------------------------------------------------------------------------------------
def section_train(check: Check, rows: list) -> None:
    """Each model at the largest batch that fits (searched without cuDNN autotuning, which would tune every
    size; halved again if the autotuned run runs out of memory); ours compiled at ours' batch."""
    device, profile = check.device, check.profile
    preset = next(iter(profile.presets.values()))
    config = unetr_config(preset, crop_size=profile.train_size)
    batches = {}

    def measure(name: str, precision: str, build: Callable, compiled: bool, flags: Callable) -> dict:
        torch.manual_seed(0)
        with torch.device(device):
            model = build(config)
        with flags() as used:
            if compiled:  # one compilation only
                batch = batches["ours"]
            else:
                with cuda_flags(False, used["tf32_matmul"], used["tf32_cudnn"]):
                    batch = largest_batch(
                        lambda b: train_steps(model, precision, device, b, profile.train_size, steps=1),
                        profile.max_batch,
                    )
            while True:
                settings = SimpleNamespace(
                    batch=batch,
                    size=profile.train_size,
                    steps=profile.steps,
                    warmup=1,
                    compile=profile.compile_backend if compiled else None,
                    peak_tflops=check.args.peak_tflops,
                )
                try:
                    row = bench_train(name, model, precision, device, settings)
                    break
                except (RuntimeError, MemoryError) as exc:
                    if not is_out_of_memory(exc) or batch == 1:
                        raise
                batch //= 2
                free_memory()
        batches.setdefault(name, batch)
        return {**row, "size": profile.train_size, "max_batch_tried": profile.max_batch, **used}

    check.attempt(rows, "ours", lambda: measure("ours", "auto", UNETR2D, False, ours_flags))
    check.attempt(rows, "BiaPy UNETR", lambda: measure("BiaPy UNETR", "fp32", BiapyUNETR, False, biapy_flags))
    if "ours" in batches:
        check.attempt(
            rows,
            "ours + torch.compile",
            lambda: measure("ours + torch.compile", "auto", UNETR2D, True, ours_flags),
        )


def section_fp16(check: Check, rows: list) -> None:
    device, profile = check.device, check.profile
    if device.type != "cuda":
        raise Skipped("fp16 autocast with GradScaler needs a CUDA GPU")
    preset = next(iter(profile.presets.values()))
    torch.manual_seed(0)
    with torch.device(device):
        model = UNETR2D(unetr_config(preset, crop_size=profile.train_size))
    settings = SimpleNamespace(
        batch=2,
        size=profile.train_size,
        steps=profile.steps,
        warmup=1,
        compile=None,
        peak_tflops=check.args.peak_tflops,
    )
    with ours_flags() as used:
        check.attempt(
            rows,
            "ours",
            lambda: {
                **bench_train("ours", model, "fp16", device, settings),
                "size": profile.train_size,
                **used,
            },
        )


# -- DDP ---------------------------------------------------------------------------------------------
def section_ddp(check: Check, rows: list) -> None:
    device, profile = check.device, check.profile
    preset = next(iter(profile.presets.values()))
    if device.type == "cpu":  # one gloo process: the DDP code runs, nothing is exchanged
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        try:
            check.add(rows, ddp_steps(device, preset, profile.train_size, batch=2, steps=profile.steps))
        finally:
            dist.destroy_process_group()
        return
    gpus = torch.cuda.device_count()
    if gpus < 2:
        raise Skipped(f"{gpus} CUDA GPU: DDP with NCCL needs at least 2")
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "ddp.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={gpus}",
            __file__,
            "--ddp-worker",
            str(output),
            "--preset",
            preset,
            "--size",
            str(profile.train_size),
        ]
        run_process_group(command)
        check.add(rows, json.loads(output.read_text()))


def run_process_group(command: list[str]) -> None:
    """Run ``command`` in its own process group, killed with all its children if this one is interrupted."""
    process = subprocess.Popen(command, start_new_session=True)
    try:
        if process.wait():
            raise RuntimeError(f"{' '.join(command[:4])} ... exited with status {process.returncode}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ddp_steps(device: torch.device, preset: str, size: int, batch: int, steps: int) -> dict:
    """Train ``steps`` DDP steps (bf16 on CUDA) in the current process group; global samples/s and
    whether every process ends with the same weights."""
    world = dist.get_world_size()
    torch.manual_seed(0)
    model = UNETR2D(unetr_config(preset, crop_size=size)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(param_groups(model, 0.02), lr=1e-4)
    generator = torch.Generator().manual_seed(dist.get_rank())  # different data on every process
    image, target = (torch.randn(batch, 1, size, size, generator=generator).to(device) for _ in range(2))
    amp = torch.bfloat16 if device.type == "cuda" else None

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = torch.nn.functional.mse_loss(ddp(image).float(), target)
        loss.backward()
        optimizer.step()

    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(gathered, checksum)
    spread = float(torch.cat(gathered).max() - torch.cat(gathered).min())
    return {
        "backend": dist.get_backend(),
        "world_size": world,
        "batch_per_process": batch,
        "size": size,
        "seconds_per_step": seconds,
        "samples_per_s": world * batch / seconds,
        "weights_in_sync": spread == 0.0,
        "weight_checksum_spread": spread,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ddp_worker(output: Path, preset: str, size: int) -> None:
    """Entry point of each torchrun process (NCCL on CUDA); rank 0 writes the result."""
    with distributed.session("cuda") as (env, device):
        result = ddp_steps(device, preset, size, batch=2, steps=5)
        if env.is_main:
            output.write_text(json.dumps(result))


# -- goals -------------------------------------------------------------------------------------------
def evaluate_goals(sections: dict, device: torch.device) -> list[dict]:
    """The issue's goals with the measured value and pass/fail (speed goals: CUDA only, else ``None``)."""
    values = {}
    predict = {
        row["model"]: row for row in sections.get("predict", {}).get("results", []) if "error" not in row
    }
    ours = [row for name, row in predict.items() if name.startswith("ours")]
    if ours:
        best = max(ours, key=lambda row: row["images_per_s"])
        values["predict_fraction_of_peak"] = best["fraction_of_peak"]
        values["predict_seconds_per_image"] = best["seconds"]
        if "BiaPy UNETR" in predict:
            values["predict_speedup_vs_biapy"] = best["images_per_s"] / predict["BiaPy UNETR"]["images_per_s"]
    train = {row["model"]: row for row in sections.get("train", {}).get("results", []) if "error" not in row}
    ours = [row for name, row in train.items() if name.startswith("ours")]
    if ours:
        best = max(ours, key=lambda row: row["samples_per_s"])
        values["train_mfu"] = best["mfu"]
        if "BiaPy UNETR" in train:
            values["train_speedup_vs_biapy"] = best["samples_per_s"] / train["BiaPy UNETR"]["samples_per_s"]
    goals = []
    parity = sections.get("parity", {}).get("results", [])
    checked = [row for row in parity if row.get("tolerance") is not None]
    if checked:  # a comparison that could not run (an "error" row) is not a pass
        worst = max(row["max_abs_diff"] for row in checked)
        passed = worst < PARITY_TOLERANCE and not any("error" in row for row in parity)
        goals.append(
            {
                "goal": "parity_fp32",
                "description": "parity with BiaPy, fp32 without TF32: max abs diff",
                "target": f"< {PARITY_TOLERANCE:g}",
                "value": worst,
                "passed": passed,
            }
        )
    for key, (op, target, description) in GOALS.items():
        value = values.get(key)
        passed = None
        if value is not None and device.type == "cuda":
            passed = value >= target if op == ">=" else value < target
        goals.append(
            {
                "goal": key,
                "description": description,
                "target": f"{op} {target:g}",
                "value": value,
                "passed": passed,
            }
        )
    return goals


SECTIONS = {
    "parity": section_parity,
    "predict": section_predict,
    "train": section_train,
    "fp16": section_fp16,
    "ddp": section_ddp,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny preset and sizes (CPU, seconds)")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument(
        "--budget",
        nargs="+",
        default=[],
        metavar="SECTION=SECONDS",
        help="override a section's time budget, e.g. predict=300",
    )
    parser.add_argument(
        "--predict-batch", type=int, default=None, help="tiles per batch (default: all tiles)"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="peak FLOP rate if the GPU is not known"
    )
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--ddp-worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="unetr_paper", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.budget = {name: float(seconds) for name, seconds in (item.split("=") for item in args.budget)}
    except ValueError:
        parser.error("--budget takes SECTION=SECONDS pairs")
    if unknown := set(args.budget) - set(SECTIONS):
        parser.error(f"unknown section(s) in --budget: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, args.preset, args.size)
        return {}
    check = Check(args)
    for name in args.sections:
        check.run(name, SECTIONS[name])
    for goal in check.report["goals"]:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[goal["passed"]]
        print(f"{goal['goal']:<28}{goal['target']:>10}  {goal['value']!s:<24}{verdict}")
    return check.report


if __name__ == "__main__":
    main()
