"""The device check (``benchmarks/gpu_check.py``) in its tiny CPU mode, so it still works when a GPU comes.

The whole check runs once per module (seconds); the other tests exercise its budget, out-of-memory and
goal logic with stand-in sections, and check its FLOP counts against layer-by-layer arithmetic.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("biapy", reason="the check compares against BiaPy's UNETR: `pip install biapy`")

from napari_lightmycells.models import UNETR2D, unetr_config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmark scripts import each other as siblings
import bench_predict  # noqa: E402
import bench_train  # noqa: E402
import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("gpu_check")
    torch.set_num_threads(1)
    report = gpu_check.main(["--tiny", "--device", "cpu", "--output-dir", str(output)])
    return report, output


def test_tiny_check_writes_json_and_markdown_with_real_numbers(tiny_run):
    report, output = tiny_run
    saved = json.loads((output / "gpu_check_cpu_tiny.json").read_text())
    assert saved["sections"].keys() == {"parity", "predict", "train", "fp16", "ddp"}
    status = {name: record["status"] for name, record in saved["sections"].items()}
    assert status == {"parity": "ok", "predict": "ok", "train": "ok", "fp16": "skipped", "ddp": "ok"}
    assert "CUDA" in saved["sections"]["fp16"]["reason"]

    predict = {row["model"]: row for row in saved["sections"]["predict"]["results"]}
    assert predict.keys() == {"ours", "ours, BiaPy's tiles", "BiaPy UNETR", "ours + torch.compile"}
    for row in predict.values():
        assert "error" not in row
        assert row["organelles"] == ["Nucleus", "Mitochondria", "Tubulin", "Actin"]
        assert row["images_per_s"] > 0 and 0 < row["fraction_of_peak"] < 1
        assert 0 < row["forward_seconds"] < 2 * row["seconds"]  # part of the end-to-end time (noisy CPU: 2x)
    # 128² in 64² tiles with BiaPy's context (25 px shared): its fixed size needs 4 x 4 per organelle; ours
    # grows to 3 x 3 of 72².
    for name in ("ours, BiaPy's tiles", "BiaPy UNETR"):
        assert (predict[name]["tiles"], predict[name]["tile_sizes"]) == (4 * 16, [64])
    for name in ("ours", "ours + torch.compile"):
        assert (predict[name]["tiles"], predict[name]["tile_sizes"]) == (4 * 9, [72])
    # Same architecture, same arithmetic: BiaPy's model and ours (compiled or not) do the same FLOPs per tile.
    assert predict["ours, BiaPy's tiles"]["tflop_per_image"] == predict["BiaPy UNETR"]["tflop_per_image"] > 0
    assert predict["ours + torch.compile"]["tflop_per_image"] == predict["ours"]["tflop_per_image"]
    assert (
        predict["ours"]["tflop_per_image"] < predict["BiaPy UNETR"]["tflop_per_image"]
    )  # fewer pixels computed

    train = {row["model"]: row for row in saved["sections"]["train"]["results"]}
    assert train.keys() == {"ours", "BiaPy UNETR", "ours + torch.compile"}
    for row in train.values():
        assert row["batch"] == 4  # the tiny profile's cap: nothing runs out of memory at 64²
        assert row["samples_per_s"] > 0 and 0 < row["mfu"] < 1 and row["peak_memory_mib"] > 0
        assert all(loss > 0 for loss in row["losses"])

    ddp = saved["sections"]["ddp"]["results"][0]
    assert ddp["backend"] == "gloo" and ddp["world_size"] == 1 and ddp["weights_in_sync"]

    goals = {goal["goal"]: goal for goal in saved["goals"]}
    assert goals["parity_fp32"]["passed"] is True
    for name in gpu_check.GOALS:  # measured on the CPU, judged only on a GPU
        assert goals[name]["value"] > 0 and goals[name]["passed"] is None
    assert saved == json.loads(json.dumps(report))

    markdown = (output / "gpu_check_cpu_tiny.md").read_text()
    for heading in (
        "## Goals",
        "## Parity",
        "## Prediction",
        "## Training step",
        "## fp16",
        "## Distributed",
    ):
        assert heading in markdown
    assert "fp16 autocast with GradScaler needs a CUDA GPU" in markdown
    assert f"{predict['ours']['images_per_s']:.3f}" in markdown
    assert "| ours + torch.compile |" in markdown and "FAIL" not in markdown


def test_tiny_check_parity_is_exact_in_fp32_and_close_in_bf16(tiny_run):
    rows = tiny_run[0]["sections"]["parity"]["results"]
    fp32 = [row for row in rows if row["tolerance"] is not None]
    assert {row["ours"] for row in fp32} == {"fp32", "fp32, channels-last"}
    assert any(row["reference"].startswith("fixture biapy_unetr_tiny_io.pt") for row in fp32)
    assert all(row["passed"] and row["max_abs_diff"] < 1e-4 for row in fp32)
    (bf16,) = [row for row in rows if row["tolerance"] is None]
    assert 1e-4 < bf16["relative_error"] < 0.05  # bf16 rounds (8-bit mantissa) but stays close


def count_flops_by_hand(model: nn.Module, image: torch.Tensor) -> int:
    """Forward FLOPs (2 per multiply-add) of the convolutions, linear layers and attention products."""
    flops = []

    def hook(module, inputs, output):
        x = inputs[0]
        if isinstance(module, nn.ConvTranspose2d):  # every input pixel meets every kernel tap
            flops.append(2 * x.numel() * module.out_channels * module.weight[0, 0].numel())
        elif isinstance(module, nn.Conv2d):  # every output pixel gathers in_channels x kernel taps
            flops.append(2 * output.numel() * module.weight[0].numel())
        elif isinstance(module, nn.Linear):
            flops.append(2 * x.numel() * module.out_features)

    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    with torch.no_grad():
        model(image)
    for handle in handles:
        handle.remove()
    encoder = model.config.encoder
    tokens = (image.shape[-1] // encoder.token_size) ** 2 + 1  # with the class token
    attention = encoder.depth * 2 * (2 * image.shape[0] * tokens * tokens * encoder.embed_dim)  # QK^T and AV
    return sum(flops) + attention


@pytest.mark.parametrize("preset", ["unetr_tiny", "unetr_small"])
def test_flop_counts_match_layer_arithmetic(preset):
    torch.manual_seed(0)
    config = unetr_config(preset)
    size = config.encoder.crop_size
    model = UNETR2D(config)
    forward = bench_predict.tile_flops(model, size)
    assert forward == count_flops_by_hand(model, torch.randn(1, 1, size, size))
    assert bench_predict.tile_flops(bench_predict.BiapyUNETR(config), size) == forward
    step, source = bench_train.step_flops(model, 2, size)
    assert source.startswith("forward + backward")
    # Backward costs about twice the forward (no gradient for the input image): a step is just under 3x.
    assert 2.5 * 2 * forward < step <= 3 * 2 * forward


def test_paper_preset_flops_are_those_of_the_readme():
    assert bench_predict.tile_flops(UNETR2D(unetr_config("unetr_paper")), 1024) / 1e12 == pytest.approx(
        3.89, abs=0.01
    )


def test_largest_batch_doubles_until_out_of_memory():
    tried = []

    def try_batch(batch):
        tried.append(batch)
        if batch > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert gpu_check.largest_batch(try_batch, max_batch=256) == 8
    assert tried == [1, 2, 4, 8, 16]
    assert gpu_check.largest_batch(lambda batch: None, max_batch=6) == 4
    with pytest.raises(torch.OutOfMemoryError, match="not even a batch of 1"):
        gpu_check.largest_batch(_always_oom, 4)
    with pytest.raises(ValueError, match="shape"):
        gpu_check.largest_batch(_bad_shape, 4)


def _always_oom(batch):
    raise RuntimeError("CUDA error: out of memory")


def _bad_shape(batch):
    raise ValueError("shape mismatch")


def test_sections_keep_their_budget_and_failures_and_the_report_is_still_written(tmp_path, monkeypatch):
    def too_slow(check, rows):
        check.add(rows, {"model": "first", "value": 1})
        while True:  # never returns: the budget stops it
            time.sleep(0.01)

    def too_big():
        raise torch.OutOfMemoryError("CUDA out of memory")

    def out_of_memory(check, rows):
        check.attempt(rows, "big", too_big)  # one measurement fails, the section goes on
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def fine(check, rows):
        check.add(rows, {"model": "ok", "value": 2})

    monkeypatch.setattr(gpu_check, "SECTIONS", {"parity": too_slow, "predict": out_of_memory, "train": fine})
    started = time.perf_counter()
    report = gpu_check.main(
        [
            "--tiny",
            "--device",
            "cpu",
            "--output-dir",
            str(tmp_path),
            "--budget",
            "parity=0.5",
            "--sections",
            "parity",
            "predict",
            "train",
        ]
    )
    assert time.perf_counter() - started < 30
    sections = report["sections"]
    assert sections["parity"]["status"] == "timeout" and sections["parity"]["results"] == [
        {"model": "first", "value": 1}
    ]
    assert (
        sections["predict"]["status"] == "failed" and "illegal memory access" in sections["predict"]["error"]
    )
    assert sections["predict"]["results"] == [
        {"model": "big", "error": "OutOfMemoryError: CUDA out of memory"}
    ]
    assert sections["train"]["status"] == "ok"
    saved = json.loads((tmp_path / "gpu_check_cpu_tiny.json").read_text())
    assert saved["sections"]["train"]["results"] == [{"model": "ok", "value": 2}]
    markdown = (tmp_path / "gpu_check_cpu_tiny.md").read_text()
    assert "**timeout**" in markdown and "big: **failed**: `OutOfMemoryError: CUDA out of memory`" in markdown


def test_goals_are_judged_on_cuda():
    sections = {
        "parity": {
            "results": [{"tolerance": 1e-4, "max_abs_diff": 3e-6}, {"tolerance": None, "max_abs_diff": 0.1}]
        },
        "predict": {
            "results": [
                {"model": "ours", "images_per_s": 2.0, "seconds": 0.5, "fraction_of_peak": 0.3},
                {
                    "model": "ours + torch.compile",
                    "images_per_s": 5.0,
                    "seconds": 0.2,
                    "fraction_of_peak": 0.45,
                },
                {"model": "BiaPy UNETR", "images_per_s": 1.0, "seconds": 1.0, "fraction_of_peak": 0.1},
            ]
        },
        "train": {
            "results": [
                {"model": "ours", "samples_per_s": 30.0, "mfu": 0.3},
                {"model": "ours + torch.compile", "error": "InductorError: ..."},
                {"model": "BiaPy UNETR", "samples_per_s": 20.0, "mfu": 0.2},
            ]
        },
    }
    goals = {
        g["goal"]: (g["value"], g["passed"]) for g in gpu_check.evaluate_goals(sections, torch.device("cuda"))
    }
    assert goals == {
        "parity_fp32": (3e-6, True),
        "predict_speedup_vs_biapy": (5.0, True),
        "predict_fraction_of_peak": (0.45, True),
        "predict_seconds_per_image": (0.2, True),
        "train_speedup_vs_biapy": (1.5, False),
        "train_mfu": (0.3, False),
    }
    sections["parity"]["results"].append(
        {"model": "fixture old_io.pt", "error": "CheckpointError: unreadable"}
    )
    (parity,) = [
        g for g in gpu_check.evaluate_goals(sections, torch.device("cpu")) if g["goal"] == "parity_fp32"
    ]
    assert parity["passed"] is False  # a comparison that could not run is not a pass


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_bf16_peak_by_gpu_name(name, peak):
    assert bench_predict.cuda_bf16_peak_tflops(name) == peak


@pytest.mark.slow
def test_shell_script_runs_the_check(tmp_path):
    script = BENCHMARKS / "gpu_check.sh"
    result = subprocess.run(
        [
            "bash",
            str(script),
            "--tiny",
            "--device",
            "cpu",
            "--sections",
            "parity",
            "--output-dir",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check_cpu_tiny.json").read_text())
    assert report["sections"]["parity"]["status"] == "ok"
    assert (tmp_path / "gpu_check_cpu_tiny.md").is_file()


def test_parity_checks_every_committed_biapy_fixture(tmp_path, monkeypatch):
    """Fixtures may sit in sub-folders with ``.pth`` checkpoints (as BiaPy names them); each gets a row."""
    fixtures = Path(__file__).parent / "fixtures"
    (tmp_path / "old").mkdir()
    shutil.copy(fixtures / "biapy_unetr_tiny.pt", tmp_path / "old" / "run.pth")
    shutil.copy(fixtures / "biapy_unetr_tiny_io.pt", tmp_path / "old" / "run_io.pt")
    (tmp_path / "broken_io.pt").write_bytes(
        b""
    )  # an output without its checkpoint: an error row, not a crash
    monkeypatch.setattr(gpu_check, "FIXTURES", tmp_path)
    report = gpu_check.main(
        ["--tiny", "--device", "cpu", "--sections", "parity", "--output-dir", str(tmp_path)]
    )
    rows = {row.get("reference", row.get("model")): row for row in report["sections"]["parity"]["results"]}
    assert rows["fixture old/run_io.pt (BiaPy 3.7.1)"]["max_abs_diff"] < 1e-4
    assert (
        rows["fixture broken_io.pt"]["error"]
        == "FileNotFoundError: no broken.pt or broken.pth next to broken_io.pt"
    )
    assert report["goals"][0]["passed"] is False
