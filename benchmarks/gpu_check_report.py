"""Markdown summary of a ``gpu_check.py`` report: goals first, then one table per section."""

from __future__ import annotations

from collections.abc import Callable

Column = tuple[str, Callable[[dict], object]]


def number(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**FAIL**", None: "n/a"}[passed]


PARITY: list[Column] = [
    ("Reference", lambda r: r["reference"]),
    ("Ours", lambda r: r["ours"]),
    ("Max abs diff", lambda r: f"{r['max_abs_diff']:.3g}"),
    ("Relative error (L2)", lambda r: f"{r['relative_error']:.3g}"),
    ("Output scale (max abs)", lambda r: f"{r['output_max_abs']:.3g}"),
    ("Tolerance", lambda r: number(r["tolerance"])),
    ("Result", lambda r: verdict(r["passed"])),
]
PREDICT: list[Column] = [
    ("Model", lambda r: r["model"]),
    ("Precision", lambda r: r["precision"]),
    ("Image / tiles", lambda r: f"{r['image']}² / " + ", ".join(f"{t}²" for t in r["tile_sizes"])),
    ("Organelles", lambda r: len(r["organelles"])),
    ("Tiles (batch)", lambda r: f"{r['tiles']} ({r['batch']})"),
    ("s / image", lambda r: number(r["seconds"])),
    ("Images / s", lambda r: number(r["images_per_s"])),
    ("Model forwards s", lambda r: number(r["forward_seconds"])),
    ("TFLOP / image", lambda r: number(r["tflop_per_image"], 4)),
    ("TFLOP/s", lambda r: number(r["achieved_tflops"])),
    ("Of peak", lambda r: percent(r["fraction_of_peak"])),
    ("Peak memory MiB", lambda r: f"{r['peak_memory_mib']:.0f}"),
]
TRAIN: list[Column] = [
    ("Model", lambda r: r["model"]),
    ("Precision", lambda r: r["precision"]),
    ("Size", lambda r: f"{r['size']}²"),
    ("Batch", lambda r: r["batch"]),
    ("s / step", lambda r: number(r["seconds_per_step"])),
    ("Samples / s", lambda r: number(r["samples_per_s"])),
    ("TFLOP / step", lambda r: number(r["tflop_per_step"], 4)),
    ("TFLOP/s", lambda r: number(r["achieved_tflops"])),
    ("MFU", lambda r: percent(r["mfu"])),
    ("Peak memory MiB", lambda r: f"{r['peak_memory_mib']:.0f}"),
    ("Final loss", lambda r: number(r["losses"][-1])),
]
FP16: list[Column] = [*TRAIN, ("Grad scale", lambda r: number(r.get("grad_scale")))]
DDP: list[Column] = [
    ("Backend", lambda r: r["backend"]),
    ("Processes", lambda r: r["world_size"]),
    ("Batch per process", lambda r: r["batch_per_process"]),
    ("s / step", lambda r: number(r["seconds_per_step"])),
    ("Samples / s (all)", lambda r: number(r["samples_per_s"])),
    ("Weights in sync", lambda r: number(r["weights_in_sync"])),
]
TITLES = {
    "parity": ("Parity with BiaPy's UNETR", PARITY),
    "predict": ("Prediction of one image, all organelles", PREDICT),
    "train": ("Training step, largest batch that fits", TRAIN),
    "fp16": ("fp16 autocast with GradScaler", FP16),
    "ddp": ("DistributedDataParallel", DDP),
}


def text(cell: Callable[[dict], object], row: dict) -> str:
    """A cell's text; "?" where the row lacks the value (the summary must be written whatever happened)."""
    try:
        return str(cell(row))
    except (KeyError, IndexError, TypeError, ValueError):
        return "?"


def table(rows: list[dict], columns: list[Column]) -> list[str]:
    lines = ["| " + " | ".join(header for header, _ in columns) + " |", "|" + "---|" * len(columns)]
    errors = []
    for row in rows:
        if "error" in row:
            errors.append(f"* {row.get('model', '?')}: **failed**: `{row['error']}`")
        else:
            lines.append("| " + " | ".join(text(cell, row) for _, cell in columns) + " |")
    return (lines if len(lines) > 2 else []) + ([""] if errors and len(lines) > 2 else []) + errors


def section_lines(name: str, record: dict) -> list[str]:
    title, columns = TITLES[name]
    status = record["status"]
    lines = [
        f"## {title}",
        "",
        f"Status: **{status}** in {record.get('seconds', 0):.1f} s (budget {record['budget_s']:g} s)",
    ]
    if record.get("reason") or record.get("error"):
        lines[-1] += f": {record.get('reason') or record.get('error')}"
    lines.append("")
    if record["results"]:
        lines += [*table(record["results"], columns), ""]
    return lines


def render_markdown(report: dict) -> str:
    lines = [
        f"# Device check ({report['check']}): {report['device_name']}",
        "",
        (
            f"{report['date']}, {report['device']}, {report['gpus']} GPU(s), torch {report['torch']}, "
            f"CUDA {report['cuda']}, cuDNN {report['cudnn']}, BiaPy {report['biapy']}; "
            f"{report['total_seconds']:.0f} s in all. Random weights and images (speed does not depend on them); "
            "FLOPs counted with FlopCounterMode; fractions of peak are of the bf16 dense data-sheet peak on CUDA "
            "(an estimate on CPUs)."
        ),
        "",
        "## Goals",
        "",
        "| Goal | Target | Measured | Result |",
        "|---|---|---|---|",
    ]
    for goal in report["goals"]:
        lines.append(
            f"| {goal['description']} | {goal['target']} | {number(goal['value'])} | {verdict(goal['passed'])} |"
        )
    if report["device"] == "cpu":
        lines += ["", "Speed goals are for a GPU: not judged on a CPU run."]
    lines.append("")
    for name, record in report["sections"].items():
        lines += section_lines(name, record)
    return "\n".join(lines) + "\n"
