"""``lightmycells study``: what a training/evaluation folder contains, and whether it is usable."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("study", help="summarise and check a study folder")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--organelle", help="only cases with this target")
    parser.add_argument("--modality", help="only cases of this modality (BF, PC, DIC)")
    parser.add_argument(
        "--check", action="store_true", help="also read pixels: reject empty/constant/NaN images"
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="first write a small synthetic study into FOLDER (new or empty)",
    )


def run(args: argparse.Namespace) -> int:
    from ..data.study import discover_study
    from ..data.synthetic import make_synthetic_study
    from ..errors import DataError

    if args.synthetic:
        if args.folder.exists() and (not args.folder.is_dir() or any(args.folder.iterdir())):
            raise DataError(
                f"{args.folder} is not empty; --synthetic writes a study into a new or empty folder."
            )
        make_synthetic_study(args.folder, organelles=("Nucleus", "Mitochondria"), modalities=("BF", "PC"))
    study = discover_study(args.folder, organelle=args.organelle, modality=args.modality)
    print(study.summary())
    study.validate(check_content=args.check)
    print("  check:        ok (shapes agree" + (", contents valid)" if args.check else ")"))
    return 0
