"""``lightmycells predict``: organelle predictions for TIFF files or folders, written as OME-TIFF."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..constants import canonical_organelle
from ..errors import LightMyCellsError, ModelError


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "predict",
        help="predict organelles from transmitted-light images",
        description="Writes <input>_<Organelle>.ome.tiff (float32, input pixel size kept) for every input.",
    )
    parser.add_argument("inputs", nargs="*", type=Path, help="TIFF/OME-TIFF files or folders of them")
    parser.add_argument("-o", "--output", type=Path, help="output folder")
    parser.add_argument(
        "-m", "--model", action="append", default=[], metavar="[ORGANELLE=]MODEL",
        help="checkpoint file (ours or BiaPy's), bioimage.io package (.zip) or registered model name; "
        "repeat for several organelles. "
        "The organelle is read from the checkpoint when not given.",
    )
    parser.add_argument("--plane", default="best", help="for Z-stacks: 'best' (least blurry), 'all', or an index")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    parser.add_argument("--tile-size", type=int, default=1024, help="tile side in pixels (default 1024)")
    parser.add_argument("--overlap", type=float, default=0.125, help="tile overlap as a fraction of the tile")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
        help="auto: bf16 on CUDA, fp32 elsewhere; bf16 is ~1.7x faster on CPUs with AVX512-BF16/AMX",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace existing outputs (never organelle images found among the inputs)",
    )
    parser.add_argument("--list-models", action="store_true", help="list registered public models and exit")


def resolve_model(spec: str) -> tuple[str, Path]:
    """``[ORGANELLE=]MODEL`` -> (organelle, checkpoint or bioimage.io package), downloading registered models."""
    from ..checkpoint import load_model
    from ..hub import fetch_model, find_entry

    organelle, _, model = spec.rpartition("=")
    path = Path(model)
    if not path.exists():
        entry = find_entry(model)
        path = fetch_model(entry)
        organelle = organelle or entry.organelle
    if not organelle:
        organelle = load_model(path)[1].organelle or ""
        if not organelle:
            raise ModelError(f"{path.name} does not say which organelle it predicts; use ORGANELLE={path}.")
    try:
        return canonical_organelle(organelle), path
    except ValueError as error:
        raise ModelError(str(error)) from None


def parse_plane(value: str) -> int | str:
    if value in ("best", "all"):
        return value
    try:
        return int(value)
    except ValueError:
        raise LightMyCellsError(f"--plane must be 'best', 'all' or a plane index, not {value!r}.") from None


def run(args: argparse.Namespace) -> int:
    from ..hub import known_models
    from ..inference.predictor import Predictor, validate_tiling
    from .progress import ProgressBar

    if args.list_models:
        entries = known_models()
        for entry in entries:
            print(f"{entry.name:<28} {entry.organelle:<13} {entry.description}")
        if not entries:
            print("No registered models (set LIGHTMYCELLS_REGISTRY to a JSON list to add your lab's).")
        return 0
    if not args.inputs or not args.output:
        raise LightMyCellsError("Give input files or folders and --output (see lightmycells predict -h).")
    if not args.model:
        raise ModelError("No model given: use --model Nucleus=nucleus.pt (repeat for more organelles).")
    plane = parse_plane(args.plane)
    validate_tiling(args.tile_size, args.overlap, args.batch_size)
    if args.output.is_file():
        raise LightMyCellsError(f"-o/--output {args.output} is an existing file; give a folder for the predictions.")
    models = dict(resolve_model(spec) for spec in args.model)
    predictor = Predictor(
        models, device=args.device, tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
        precision=args.precision,
    )
    bar = ProgressBar("predict")
    results = predictor.predict_files(args.inputs, args.output, plane=plane, callbacks=[bar], overwrite=args.overwrite)
    bar.close()
    for result in results:
        print(f"{result.status:<8} {result.file}  {result.message}")
    failed = [r for r in results if r.status == "error"]
    done = [r for r in results if r.status == "ok"]
    skipped = len(results) - len(done) - len(failed)
    print(f"{len(done)} of {len(done) + len(failed)} inputs done ({skipped} skipped), outputs in {args.output}")
    return 1 if failed else 0
