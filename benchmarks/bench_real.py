"""Quality on real microscopy: fine-tune on part of a real study, score the held-out part per focus plane.

Data: ``../shared/data/real-studies`` (see its SOURCES.md; never copied into the project, skipped when absent).

* sephace (bright field, 6 planes -> DAPI, two 1024x1344 fields): train on one field, test on the other, both ways.
* isl (phase contrast, 5 planes -> DAPI, one 1024² field): train on three quadrants, test on the fourth.

Each split is trained from scratch and from an encoder MAE-pretrained on every real input plane (unlabelled,
test fields included, as self-supervised pretraining may use any unlabelled image): the paper's central
ablation at CPU scale. Held-out fields are predicted with the Predictor's defaults (tiles of the training size)
and scored with the challenge metrics for every focus plane, next to the identity baseline (the input itself)
and with the tile seam ratio. Example (about 35 min on one busy CPU core)::

    python benchmarks/bench_real.py --steps 250 --pretrain-steps 600

or, one process per split (sharing one MAE encoder)::

    python benchmarks/bench_real.py --crop 256 --steps 400 --encoder mae.pt --only pretrain
    python benchmarks/bench_real.py --crop 256 --steps 400 --encoder mae.pt --only "sephace 1" &
    ...

Prints a table, writes ``benchmarks/results/real_cpu.json`` and ``docs/images/real_prediction.png``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_predict import machine, save_report  # sibling script: machine info, JSON writer

from napari_lightmycells.data.focus import best_focus_index
from napari_lightmycells.data.io import read_image
from napari_lightmycells.data.regions import write_region_case
from napari_lightmycells.data.study import discover_study
from napari_lightmycells.inference.predictor import Predictor
from napari_lightmycells.inference.seams import seam_ratio, tile_edges
from napari_lightmycells.metrics import compute_metrics
from napari_lightmycells.training.config import PretrainConfig, load_config
from napari_lightmycells.training.finetune import finetune
from napari_lightmycells.training.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT.parent / "shared" / "data" / "real-studies"
ALL = (slice(None), slice(None))
ISL_QUADRANTS = [(slice(r, r + 512), slice(c, c + 512)) for r in (0, 512) for c in (0, 512)]


def splits() -> list[dict]:
    """Train/test splits: ``train`` lists (case, region) pairs, ``test`` one (case, region)."""
    sephace = discover_study(STUDIES / "sephace", organelle="Nucleus").cases
    isl = discover_study(STUDIES / "isl", organelle="Nucleus").cases[0]
    return [  # in_focus: sephace's z2 is at the stage's focus (SOURCES.md); isl's is found by the focus measure
        {"name": "sephace 1->2", "train": [(sephace[0], ALL)], "test": (sephace[1], ALL), "in_focus": 2},
        {"name": "sephace 2->1", "train": [(sephace[1], ALL)], "test": (sephace[0], ALL), "in_focus": 2},
        {
            "name": "isl 3 quadrants->4th",
            "train": [(isl, q) for q in ISL_QUADRANTS[:3]],
            "test": (isl, ISL_QUADRANTS[3]),
            "in_focus": None,
        },
    ]


def pretrain_encoder(args, work: Path) -> tuple[Path, float]:
    """MAE on every input plane of both studies (no targets used)."""
    folder = work / "unlabelled"
    cases = discover_study(STUDIES / "sephace").cases + discover_study(STUDIES / "isl").cases
    for number, case in enumerate(cases, start=1):
        write_region_case(case, *ALL, folder, case_id=number)
    config = load_config(
        "pretrain_tiny",
        PretrainConfig,
        data=str(folder),
        output=str(work / "mae"),
        model=args.mae,
        crop_size=args.crop,
        batch_size=8,
        samples_per_plane=8,
        epochs=10_000,
        max_steps=args.pretrain_steps,
        lr=1.5e-3,
        warmup_epochs=0.5,
        preview_every=0,
    )
    start = time.perf_counter()
    result = pretrain(config)
    return result.last_path, time.perf_counter() - start


def train(args, split: dict, init: Path | None, output: Path) -> tuple[Path, float]:
    folder = output.with_name(output.name + "-data")
    for number, (case, region) in enumerate(split["train"], start=1):
        write_region_case(case, *region, folder, case_id=number)
    steps_per_epoch = 25
    config = load_config(
        "tiny_cpu",
        data=str(folder),
        output=str(output),
        model=args.model,
        crop_size=args.crop,
        batch_size=8,
        samples_per_case=steps_per_epoch * 8 // len(split["train"]),
        epochs=max(1, args.steps // steps_per_epoch),
        max_steps=args.steps,
        val_fraction=0.0,
        lr=args.lr,
        warmup_epochs=1,
        preview_every=0,
        init_encoder=str(init) if init else None,
    )
    start = time.perf_counter()
    result = finetune(config.model_copy(update={"patience": None}))
    return result.last_path, time.perf_counter() - start


def evaluate(checkpoint: Path, test, in_focus: int | None) -> tuple[dict, tuple]:
    """Challenge metrics of the model and of the identity baseline for every plane of the held-out region."""
    case, (rows, columns) = test
    target = read_image(case.targets["Nucleus"]).data[rows, columns]
    predictor = Predictor({"Nucleus": checkpoint}, device="cpu")
    planes, images = [], []
    for z, plane in enumerate(case.planes()):
        image = read_image(plane.path).data[rows, columns]
        start = time.perf_counter()
        prediction = predictor.predict(image)["Nucleus"]
        seconds = time.perf_counter() - start
        grid = predictor.tile_grid(image.shape, "Nucleus")
        planes.append(
            {
                "plane": z,
                "predict_s": round(seconds, 2),
                "tile": grid.tile,
                "tiles": len(grid),
                "seam_ratio": round(seam_ratio(prediction, *tile_edges(grid)), 3),
                "model": rounded(compute_metrics(prediction, target)),
                "identity": rounded(compute_metrics(image, target)),
            }
        )
        images.append((image, prediction))
    focus = best_focus_index(np.stack([image for image, _ in images])) if in_focus is None else in_focus
    image, prediction = images[focus]
    return {"in_focus_plane": focus, "planes": planes}, (image, target, prediction)


def tiling_sweep(args, work: Path) -> list[dict]:
    """Tile size and overlap against seams, quality and computed pixels: a model fine-tuned on sephace field 1
    predicts field 2 (planes 2, in focus, and 0, 25 µm below) with every setting."""
    split = splits()[0]
    checkpoint, _ = train(args, split, None, work / "sweep")
    case, _ = split["test"]
    target = read_image(case.targets["Nucleus"]).data
    rows = []
    for z in (2, 0):
        image = read_image(case.planes()[z].path).data
        for tile in (args.crop, 2 * args.crop):
            for overlap in (0.0, 0.125, 0.2, 0.25, 0.4):
                predictor = Predictor({"Nucleus": checkpoint}, device="cpu", tile_size=tile, overlap=overlap)
                start = time.perf_counter()
                prediction = predictor.predict(image)["Nucleus"]
                seconds = time.perf_counter() - start
                grid = predictor.tile_grid(image.shape, "Nucleus")
                metrics = compute_metrics(prediction, target)
                rows.append(
                    {
                        "plane": z,
                        "tile_size": tile,
                        "overlap": overlap,
                        "tile": grid.tile,
                        "tiles": len(grid),
                        "computed_pixels_per_pixel": round(grid.computed_pixels() / image.size, 2),
                        "predict_s": round(seconds, 1),
                        "seam_ratio": round(seam_ratio(prediction, *tile_edges(grid)), 3),
                        "PCC": round(metrics["PCC"], 4),
                        "SSIM": round(metrics["SSIM"], 4),
                    }
                )
                print(rows[-1])
    return rows


def rounded(metrics: dict) -> dict:
    return {name: round(float(value), 4) for name, value in metrics.items()}


def save_picture(panels, path: Path, title: str) -> None:
    """``input | target | prediction`` side by side, each percentile-stretched."""
    from PIL import Image, ImageDraw

    strips = []
    for array in panels:
        low, high = np.percentile(array, (1, 99.8))
        strips.append((np.clip((array - low) / max(high - low, 1e-12), 0, 1) * 255).astype(np.uint8))
    gap = np.full((strips[0].shape[0], 8), 255, np.uint8)
    canvas = Image.fromarray(np.concatenate([strips[0], gap, strips[1], gap, strips[2]], axis=1))
    canvas.thumbnail((1536, 1536))
    framed = Image.new("L", (canvas.width, canvas.height + 28), 255)
    framed.paste(canvas, (0, 28))
    ImageDraw.Draw(framed).text((6, 6), title, fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    framed.save(path)
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unetr_tiny")
    parser.add_argument("--mae", default="mae_tiny")
    parser.add_argument("--crop", type=int, default=128, help="training crop = default prediction tile (px)")
    parser.add_argument("--steps", type=int, default=250, help="fine-tuning steps (batch 8) per run")
    parser.add_argument("--pretrain-steps", type=int, default=600, help="MAE steps (batch 8)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--tiling-sweep", action="store_true", help="only the tile size/overlap sweep (sephace 1->2)"
    )
    parser.add_argument(
        "--only", help="only the splits whose name starts with this (sephace, isl), or 'pretrain' (MAE only)"
    )
    parser.add_argument(
        "--encoder",
        type=Path,
        help="MAE checkpoint for the pretrained runs: used if it exists, else pretrained and saved there "
        "(pretrain once with --only pretrain, then run the splits in parallel processes)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--picture", type=Path, default=ROOT / "docs" / "images" / "real_prediction.png")
    args = parser.parse_args()
    if not STUDIES.is_dir():
        print(
            f"skipped: real studies not found at {STUDIES} (shared/ beside the project, see its SOURCES.md)"
        )
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report = {"machine": machine(torch.device("cpu")), "recipe": vars(args) | {"batch_size": 8}, "runs": []}
    report["recipe"] = {k: str(v) if isinstance(v, Path) else v for k, v in report["recipe"].items()}
    best = None
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        work = Path(tmp)
        if args.tiling_sweep:
            save_report({**report, "sweep": tiling_sweep(args, work)}, args.output, "real_tiling_cpu")
            return
        if args.encoder and args.encoder.is_file():
            encoder, seconds = args.encoder, None
            print(f"MAE encoder: {encoder}")
        else:
            encoder, seconds = pretrain_encoder(args, work)
            print(f"MAE pretraining: {args.pretrain_steps} steps in {seconds:.0f} s")
            if args.encoder:
                shutil.copyfile(encoder, args.encoder)
        report["pretrain"] = {
            "model": args.mae,
            "steps": args.pretrain_steps,
            "seconds": seconds and round(seconds, 1),
        }
        if args.only == "pretrain":
            return
        for number, split in enumerate(splits()):
            if args.only and not split["name"].startswith(args.only):
                continue
            for init in ("scratch", "mae"):
                torch.manual_seed(0)
                output = work / f"run{number}-{init}"
                checkpoint, seconds = train(args, split, encoder if init == "mae" else None, output)
                scores, panels = evaluate(checkpoint, split["test"], split["in_focus"])
                run = {"split": split["name"], "init": init, "train_s": round(seconds, 1), **scores}
                report["runs"].append(run)
                focus = run["planes"][run["in_focus_plane"]]
                print(
                    f"{split['name']:<22} {init:<8} {seconds:6.0f} s  in-focus plane {run['in_focus_plane']}: "
                    f"PCC {focus['model']['PCC']:.3f} (identity {focus['identity']['PCC']:.3f})  "
                    f"SSIM {focus['model']['SSIM']:.3f} (identity {focus['identity']['SSIM']:.3f})  "
                    f"seam {focus['seam_ratio']:.2f}"
                )
                if split["name"].startswith("isl") and (best is None or focus["model"]["PCC"] > best[0]):
                    best = (
                        focus["model"]["PCC"],
                        panels,
                        f"{split['name']}, {init}, plane {run['in_focus_plane']}",
                    )
                save_report(report, args.output, "real_cpu" + (f"_{args.only}" if args.only else ""))
    if best is not None:
        pcc, panels, label = best
        save_picture(
            panels,
            args.picture,
            f"input | target (DAPI) | prediction   isl held-out quadrant ({label}, PCC {pcc:.2f})",
        )


if __name__ == "__main__":
    main()
