"""napari event-loop latency while the Fine-tune widget trains (idle, in a process, in a thread) and while
the Predict widget fills its output layer tile by tile.

A precise QTimer ticks every 20 ms in the viewer's event loop; each tick's lateness (measured interval
minus 20 ms) is recorded while a run trains from image layers (``unetr_small``, 128 px patches on the
CPU by default), previews and plot updated every epoch (preview layers are created anew in each mode). Also reported: the time from Start to the first
optimiser step (process start-up included). For prediction (a ``--predict-size`` square image in
``--tile`` px tiles), the time from Predict to the first tile drawn, with the models not yet loaded (cold)
and kept from the previous click (warm), against one tile's compute time (goal: first tile within one
tile's compute time once the model is loaded, no event-loop stall over 100 ms). Prints a table and saves
benchmarks/results/gui_latency.json (``--only X``: gui_latency_X.json).

    xvfb-run -a python benchmarks/bench_gui_latency.py [--seconds 20 --model unetr_small --patch 128]
    xvfb-run -a python benchmarks/bench_gui_latency.py --only predict [--predict-size 1024 --tile 256]
"""

from __future__ import annotations

import torch  # (before Qt)

# isort: split

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QEventLoop, QTimer

from napari_lightmycells.data.io import read_image
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.widgets._latency import TICK_MS, LatencyProbe
from napari_lightmycells.widgets.finetune import FinetuneWidget, PairRow

RESULTS = Path(__file__).parent / "results" / "gui_latency.json"


def run_event_loop(seconds: float, until=None, poll_ms: int = 50) -> None:
    """Run the Qt event loop for ``seconds`` (or until ``until()`` is true, checked every ``poll_ms``)."""
    loop = QEventLoop()
    deadline = time.perf_counter() + seconds
    check = QTimer()
    check.timeout.connect(lambda: (time.perf_counter() > deadline or (until and until())) and loop.quit())
    check.start(poll_ms)
    loop.exec()
    check.stop()


def make_widget(viewer: napari.Viewer, study: Path, args, output: Path) -> FinetuneWidget:
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    for index in range(1, args.cases + 1):
        stack = np.stack([read_image(study / f"image_{index}_BF_z{z}.ome.tiff").data for z in range(2)])
        viewer.add_image(stack, name=f"BF {index}")
        viewer.add_image(read_image(study / f"image_{index}_Nucleus.ome.tiff").data, name=f"Nucleus {index}")
        if index > 1:
            widget.pairs.append(PairRow(viewer))
        row = widget.pairs[index - 1]
        row.input.value, row.target.value = viewer.layers[f"BF {index}"], viewer.layers[f"Nucleus {index}"]
    widget.model.value, widget.crop_size.value, widget.batch_size.value = args.model, args.patch, args.batch
    widget.epochs.value, widget.val_fraction.value, widget.workers.value = 10_000, 0.25, 0
    widget.samples.value = 2
    widget.device.value, widget.output.value = "cpu", output
    return widget


def measure_mode(widget: FinetuneWidget, probe: LatencyProbe, mode: str, seconds: float) -> dict:
    widget.mode = mode
    started = time.perf_counter()
    widget.start()
    run_event_loop(300, until=lambda: widget.progress.value >= 1 or widget.job is None)
    first_step_s = time.perf_counter() - started
    probe.start()
    run_event_loop(seconds)
    latency = probe.stop()
    steps = widget.progress.value
    widget.stop()
    run_event_loop(120, until=lambda: widget.job is None)
    for layer in [layer for layer in widget.viewer.layers if layer.name.startswith("Fine-tuning preview")]:
        widget.viewer.layers.remove(layer)  # each mode pays for creating its preview layers
    return {"mode": mode, "start_to_first_step_s": round(first_step_s, 2), "steps_seen": steps, **latency}


def measure_prediction(viewer: napari.Viewer, probe: LatencyProbe, args, folder: Path) -> list[dict]:
    """Predict twice (models cold, then cached): time to the first drawn tile, lateness while predicting."""
    from napari_lightmycells.checkpoint import save_checkpoint
    from napari_lightmycells.inference.predictor import Predictor
    from napari_lightmycells.inference.tiling import plan_tiles
    from napari_lightmycells.models import create_model
    from napari_lightmycells.widgets.predict import PredictWidget

    model = create_model(args.model).eval()
    checkpoint = save_checkpoint(folder / "predict.pt", model, organelle="Nucleus")
    image = np.random.default_rng(0).random((args.predict_size, args.predict_size), dtype=np.float32)
    grid = plan_tiles(image.shape, args.tile, model.token_size, 0.125)
    one_tile = Predictor({"Nucleus": model}, "cpu", tile_size=grid.tile, tile_growth=1.0)
    one_tile.predict(image[: grid.tile, : grid.tile])  # warm-up
    started = time.perf_counter()
    one_tile.predict(image[: grid.tile, : grid.tile])
    tile_s = time.perf_counter() - started

    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    widget.image.value = viewer.add_image(image, name="cells")
    widget.device.value, widget.tile_size.value, widget.batch_size.value = "cpu", args.tile, 1
    widget.rows["Nucleus"].file.value = checkpoint
    rows = []
    for mode in ("predict cold", "predict warm"):
        probe.start()
        started = time.perf_counter()
        widget.start()
        run_event_loop(600, until=lambda: not widget._blank, poll_ms=5)
        first_tile_s = time.perf_counter() - started
        run_event_loop(600, until=lambda: widget.worker is None)
        total_s = time.perf_counter() - started
        rows.append(
            {
                "mode": mode,
                "first_tile_s": round(first_tile_s, 3),
                "tile_compute_s": round(tile_s, 3),
                "tiles": len(grid),
                "tile_px": grid.tile,
                "total_s": round(total_s, 2),
                **probe.stop(),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", default="unetr_small")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--only", choices=("finetune", "predict"), help="run one part (default: both)")
    parser.add_argument("--predict-size", type=int, default=1024, help="side of the image predicted")
    parser.add_argument("--tile", type=int, default=256, help="prediction tile size")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gui_latency_"))
    study = make_synthetic_study(tmp / "study", n_cases=args.cases, size=2 * args.patch, n_planes=2)
    viewer = napari.Viewer()
    probe = LatencyProbe()
    widget = make_widget(viewer, study, args, tmp / "run")
    run_event_loop(2)  # let the window settle
    probe.start()
    run_event_loop(args.seconds)
    rows = [{"mode": "idle", **probe.stop()}]
    if args.only != "predict":
        rows += [measure_mode(widget, probe, mode, args.seconds) for mode in ("process", "thread")]
    if args.only != "finetune":
        rows += measure_prediction(viewer, probe, args, tmp)
    viewer.close()

    print(
        f"{'mode':12} {'ticks':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>8} {'>100ms':>7} {'1st step / 1st tile':>9}"
    )
    for row in rows:
        first = f"{row['start_to_first_step_s']:.1f} s" if "start_to_first_step_s" in row else "-"
        if "first_tile_s" in row:
            first = f"{row['first_tile_s']:.2f} s (1 tile: {row['tile_compute_s']:.2f} s)"
        print(
            f"{row['mode']:12} {row['ticks']:6d} {row['p50_ms']:7.1f} {row['p95_ms']:7.1f} {row['p99_ms']:7.1f} "
            f"{row['max_ms']:8.1f} {row['over_100ms']:7d} {first:>9}"
        )
    results = RESULTS.with_name(f"gui_latency_{args.only}.json") if args.only else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        json.dumps(
            {
                "what": f"lateness of a {TICK_MS} ms QTimer in the napari event loop while fine-tuning from "
                "layers and while predicting (first_tile_s: Predict click to first tile drawn)",
                "settings": vars(args),
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                    "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "napari": napari.__version__,
                },
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"saved {results}")


if __name__ == "__main__":
    main()
