"""``lightmycells demo``: the whole pipeline on a generated sample study, in a few minutes on a CPU.

Writes a small synthetic LightMyCells study, fine-tunes a tiny UNETR on it, predicts the held-out
cases, scores them with the challenge metrics next to an identity baseline, and says how to look at
the result in napari.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("demo", help="generate sample data, train a tiny model, predict and evaluate it")
    parser.add_argument("-o", "--output", type=Path, default=Path("lightmycells-demo"), help="demo folder")
    parser.add_argument(
        "--epochs", type=int, default=12, help="fine-tuning epochs (default 12, ~2 min on 2 cores)"
    )
    parser.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    parser.add_argument(
        "--overwrite", action="store_true", help="redo the demo in a folder that holds an earlier one"
    )


def run(args: argparse.Namespace) -> int:
    from ..data.dataset import split_cases
    from ..data.study import discover_study
    from ..data.synthetic import make_synthetic_study
    from ..errors import DataError
    from ..evaluate import Pair, evaluate, summarize, summary_markdown
    from ..inference.predictor import Predictor
    from ..training.config import load_config
    from ..training.finetune import finetune
    from .progress import ProgressBar

    out = args.output
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise DataError(
            f"{out} is not empty (an earlier demo?); pass --overwrite to redo it there, or -o NEW_FOLDER."
        )
    study_dir = make_synthetic_study(
        out / "study", n_cases=12, size=192, n_planes=3, modalities=("BF", "PC"), seed=0
    )
    print(discover_study(study_dir).summary())

    config = load_config(
        "tiny_cpu",
        data=str(study_dir),
        output=str(out / "run"),
        epochs=args.epochs,
        patience=args.epochs,
        device=args.device,
        val_fraction=0.25,
    )
    result = finetune(
        config, callbacks=[ProgressBar("fine-tune")], overwrite=args.overwrite
    )  # last line: best model

    _, held_out = split_cases(
        discover_study(study_dir).cases, config.val_fraction, config.seed
    )  # validation cases
    inputs = [path for case in held_out for path in case.inputs]
    predictor = Predictor({"Nucleus": result.best_path}, device=args.device, tile_size=192)
    bar = ProgressBar("predict")
    results = predictor.predict_files(
        inputs, out / "predictions", plane="best", callbacks=[bar], overwrite=args.overwrite
    )
    bar.close()

    targets = {path: case.targets["Nucleus"] for case in held_out for path in case.inputs}
    predicted = [
        Pair(r.outputs[0], targets[r.file], "Nucleus", r.file.name) for r in results if r.status == "ok"
    ]
    model_rows = evaluate(predicted, output_dir=out / "evaluation", overwrite=args.overwrite)
    identity_rows = evaluate([Pair(path, target, "Nucleus", path.name) for path, target in targets.items()])
    print("\nUNETR predictions (held-out cases):\n" + summary_markdown(summarize(model_rows)))
    print("Baseline, the transmitted-light input itself:\n" + summary_markdown(summarize(identity_rows)))
    print(
        f"Tables: {out / 'evaluation'}\n"
        f"Look at it in napari:  napari {inputs[0]} {held_out[0].targets['Nucleus']}\n"
        f"  then Plugins > LightMyCells > Predict organelles, with the model {result.best_path}"
    )
    return 0
