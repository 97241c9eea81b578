"""napari event-loop latency while the Fine-tune widget trains (idle, in a process, in a thread) and while
the Predict widget fills its output layer tile by tile.

A precise QTimer ticks every 20 ms in the viewer's event loop; each tick's lateness (measured interval
minus 20 ms) is recorded while a run trains from image layers (``unetr_small``, 128 px patches on the
CPU by default), previews and plot updated every epoch (preview layers are created anew in each mode).
Also reported: the time from Start to the first optimiser step (process start-up included).

Prediction runs in a viewer of its own holding only the image predicted (every visible layer adds to each
repaint). For a ``--predict-size`` square image in ``--tile`` px tiles: the time from the Predict click to
the first tile drawn on the canvas, with the model not yet loaded and a new output layer (cold), the model
cached and a new layer, and both reused (warm), against one tile's compute time measured in the same run,
with where that time goes (worker start, model loading, statistics, the tile's forward pass in the widget,
delivery to the main thread, drawing); and, for reference, the lateness caused by one repaint of the same
canvas with nothing computing. Goal: first tile within one tile's compute time once the model is loaded,
no event-loop stall over 100 ms. Prints tables and saves benchmarks/results/gui_latency.json
(``--only X``: gui_latency_X.json; or ``--output``).

    xvfb-run -a python benchmarks/bench_gui_latency.py [--seconds 20 --model unetr_small --patch 128]
    xvfb-run -a python benchmarks/bench_gui_latency.py --only predict [--predict-size 1024 --tile 256]
    xvfb-run -a python benchmarks/bench_gui_latency.py --only predict --model unetr_paper --precision bf16 \
        --predict-size 2048 --tile 1024 --warm 1 --output benchmarks/results/gui_latency_predict_paper.json
"""

from __future__ import annotations

import torch  # (before Qt)

# isort: split

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QEventLoop, QTimer

from napari_lightmycells.checkpoint import save_checkpoint
from napari_lightmycells.data.io import read_image
from napari_lightmycells.data.synthetic import make_synthetic_study
from napari_lightmycells.devices import PRECISIONS
from napari_lightmycells.inference.predictor import Predictor
from napari_lightmycells.inference.tiling import plan_tiles
from napari_lightmycells.models import create_model
from napari_lightmycells.widgets import predict as predict_widget
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


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (Linux ``/proc/stat``: user ... steal), ``None`` elsewhere."""
    try:
        return [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    except (OSError, ValueError):
        return None


def steal_percent(start: list[int] | None) -> float | None:
    """Share of CPU time taken by the hypervisor for other machines since ``start`` (a noisy host)."""
    end = cpu_times()
    if start is None or end is None or sum(end) == sum(start):
        return None
    return round(100 * (end[7] - start[7]) / (sum(end) - sum(start)), 1)


def new_viewer() -> napari.Viewer:
    viewer = napari.Viewer()
    viewer.window.resize(2000, 1300)  # a canvas of about 1100 x 1500 px beside the docks
    return viewer


def scene_canvas(viewer: napari.Viewer):
    """The vispy canvas napari draws into (its draw events, its size, a bare repaint)."""
    return viewer.window._qt_viewer.canvas._scene_canvas


def measure_idle(probe: LatencyProbe, seconds: float, mode: str) -> dict:
    run_event_loop(2)  # let the window settle
    probe.start()
    run_event_loop(seconds)
    return {"mode": mode, **probe.stop()}


def measure_repaint(viewer: napari.Viewer, probe: LatencyProbe, repeats: int = 10) -> dict:
    """Lateness from one repaint of the canvas alone (nothing computing): what any canvas update costs in
    this viewer (with software OpenGL it grows with the window's area)."""
    canvas = scene_canvas(viewer)
    probe.start()
    for _ in range(repeats):
        run_event_loop(0.2)
        canvas.update()
    run_event_loop(0.2)
    return {"mode": "canvas repaint alone", **probe.stop()}


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


class PredictionMarks:
    """When each step from the Predict click to the first tile drawn first happens (seconds after the click),
    taken by wrapping the functions of that path and listening to the canvas's draw events."""

    STEPS = (  # (name, what is wrapped, attribute, marked at the call's end)
        ("worker started", predict_widget, "run_prediction", False),
        ("models ready", Predictor, "__init__", True),
        ("tile forward", Predictor, "_forward", False),
        ("tile computed", Predictor, "_forward", True),
        ("layers added", predict_widget.PredictWidget, "_output_layer", True),
        ("click returned", predict_widget.PredictWidget, "start", True),
        ("tile received", predict_widget.PredictWidget, "_on_tiles", False),
    )

    def __init__(self, viewer: napari.Viewer):
        self.times: dict[str, float] = {}
        self.clicked = time.perf_counter()
        for name, owner, attribute, at_end in self.STEPS:
            self._wrap(name, owner, attribute, at_end)
        scene_canvas(viewer).events.draw.connect(self._on_draw, position="last")

    def reset(self) -> None:
        self.times, self.clicked = {}, time.perf_counter()

    def _mark(self, name: str) -> None:
        self.times.setdefault(name, time.perf_counter() - self.clicked)

    def _wrap(self, name: str, owner, attribute: str, at_end: bool) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def marked(*args, **kwargs):
            if not at_end:
                self._mark(name)
            result = original(*args, **kwargs)
            if at_end:
                self._mark(name)
            return result

        setattr(owner, attribute, marked)

    def _on_draw(self, _event) -> None:
        if "tile received" in self.times:
            self._mark("tile drawn")

    SPANS = (  # (key, from step, to step); from the click when None
        ("click_busy_ms", None, "click returned"),  # the main thread in start(): progress bar, layers added
        ("to_worker_ms", None, "worker started"),
        ("models_ms", "worker started", "models ready"),
        ("stats_ms", "models ready", "tile forward"),  # validation, focus plane, normalisation statistics
        ("forward_ms", "tile forward", "tile computed"),
        ("to_main_thread_ms", "tile computed", "tile received"),  # the signal waits for the main thread
        ("to_drawn_ms", "tile received", "tile drawn"),  # contrast limits, texture upload, canvas repaint
    )

    @classmethod
    def breakdown_keys(cls) -> list[str]:
        return [key for key, _, _ in cls.SPANS]

    def breakdown(self) -> dict:
        """Milliseconds spent in each span (``None`` when a step did not happen)."""
        t = {None: 0.0, **self.times}
        return {
            key: round(1000 * (t[end] - t[begin]), 1) if begin in t and end in t else None
            for key, begin, end in self.SPANS
        }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


class OneTile:
    """Times the prediction of one tile alone in this process (the reference for the first tile's latency)."""

    def __init__(self, model, image: np.ndarray, tile: int, precision: str):
        self.predictor = Predictor(
            {"Nucleus": model}, "cpu", tile_size=tile, tile_growth=1.0, precision=precision
        )
        self.tile = image[:tile, :tile]
        self.predictor.predict(self.tile)  # warm-up

    def seconds(self, repeats: int = 3) -> float:
        """Median of ``repeats`` predictions."""
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            self.predictor.predict(self.tile)
            times.append(time.perf_counter() - started)
        return float(np.median(times))


def measure_prediction(viewer: napari.Viewer, probe: LatencyProbe, args, folder: Path) -> list[dict]:
    """Predict with the model not loaded and a new layer (cold), the model cached and a new layer, then with
    the model and layer reused (warm, ``--warm`` clicks): time to the first drawn tile, and its breakdown,
    against one tile's compute time measured in the same run; lateness while predicting."""
    model = create_model(args.model).eval()
    checkpoint = save_checkpoint(folder / "predict.pt", model, organelle="Nucleus")
    image = np.random.default_rng(0).random((args.predict_size, args.predict_size), dtype=np.float32)
    widget = predict_widget.PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    widget.image.value = viewer.add_image(image, name="cells")
    rows = [measure_idle(probe, args.seconds, "predict idle")]
    widget.device.value, widget.tile_size.value, widget.batch_size.value = "cpu", args.tile, 1
    widget.precision.value = args.precision
    widget.rows["Nucleus"].file.value = checkpoint
    grid = plan_tiles(image.shape, args.tile, model.token_size, widget.overlap.value)
    one_tile = OneTile(model, image, grid.tile, args.precision)
    marks = PredictionMarks(viewer)
    for mode in ["cold", "new layer", *["warm"] * args.warm]:
        if mode == "new layer":
            viewer.layers.remove("cells Nucleus")
        run_event_loop(1)
        tile_s = one_tile.seconds()  # just before the click: the same load on the machine
        probe.start()
        marks.reset()
        widget.start()
        run_event_loop(600, until=lambda: widget.worker is None)
        total_s = time.perf_counter() - marks.clicked
        rows.append(
            {
                "mode": f"predict {mode}",
                "first_tile_s": round(marks.times["tile drawn"], 3),
                "tile_compute_s": round(tile_s, 3),
                "beyond_one_tile_ms": round(1000 * (marks.times["tile drawn"] - tile_s), 1),
                **marks.breakdown(),
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
    parser.add_argument("--warm", type=int, default=3, help="clicks with the model and layer reused")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="prediction precision")
    parser.add_argument("--output", type=Path, help="JSON file to write (default: see above)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gui_latency_"))
    load_start = round(os.getloadavg()[0], 2)  # other processes on the machine make everything slower
    cpu_start = cpu_times()
    probe = LatencyProbe()
    rows = []
    if args.only != "predict":  # a viewer with the fine-tuning layers
        viewer = new_viewer()
        study = make_synthetic_study(tmp / "study", n_cases=args.cases, size=2 * args.patch, n_planes=2)
        widget = make_widget(viewer, study, args, tmp / "run")
        rows += [measure_idle(probe, args.seconds, "idle")]
        rows += [measure_mode(widget, probe, mode, args.seconds) for mode in ("process", "thread")]
        viewer_size = list(scene_canvas(viewer).size)
        viewer.close()
    if args.only != "finetune":  # a viewer with only the image predicted
        viewer = new_viewer()
        rows += measure_prediction(viewer, probe, args, tmp)
        rows += [measure_repaint(viewer, probe)]
        viewer_size = list(scene_canvas(viewer).size)
        viewer.close()

    print(
        f"{'mode':18} {'ticks':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>8} {'>100ms':>7}  1st step / 1st tile"
    )
    for row in rows:
        first = f"{row['start_to_first_step_s']:.1f} s" if "start_to_first_step_s" in row else "-"
        if "first_tile_s" in row:
            first = f"{row['first_tile_s']:.2f} s (1 tile: {row['tile_compute_s']:.2f} s)"
        print(
            f"{row['mode']:18} {row['ticks']:6d} {row['p50_ms']:7.1f} {row['p95_ms']:7.1f} {row['p99_ms']:7.1f} "
            f"{row['max_ms']:8.1f} {row['over_100ms']:7d}  {first}"
        )
    steps = ["beyond_one_tile_ms", *PredictionMarks.breakdown_keys()]
    steps = [key for key in steps if any(key in row for row in rows)]
    if steps:
        print(
            "\nClick to first tile drawn (ms):\n" + f"{'mode':18} " + " ".join(f"{k[:-3]:>14}" for k in steps)
        )
        for row in [row for row in rows if "first_tile_s" in row]:
            print(f"{row['mode']:18} " + " ".join(f"{_ms(row[key]):>14}" for key in steps))
    results = args.output or (RESULTS.with_name(f"gui_latency_{args.only}.json") if args.only else RESULTS)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        json.dumps(
            {
                "what": f"lateness of a {TICK_MS} ms QTimer in the napari event loop while fine-tuning from "
                "layers and while predicting (first_tile_s: Predict click to first tile drawn, then where that "
                "time went in ms; tile_compute_s: one tile predicted alone in the same process just before the click)",
                "settings": vars(args),
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                    "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "napari": napari.__version__,
                    "canvas_px": viewer_size,
                    "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
                    "cpu_steal_percent": steal_percent(cpu_start),
                },
                "results": rows,
            },
            indent=2,
            default=str,  # --output is a Path
        )
        + "\n"
    )
    print(f"saved {results}")


if __name__ == "__main__":
    main()
