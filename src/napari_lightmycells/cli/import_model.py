"""``lightmycells import``: turn a bioimage.io UNETR package (ours or BiaPy's) into a checkpoint."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    parser = sub.add_parser("import", help="import a bioimage.io model package as a checkpoint")
    parser.add_argument("package", help="bioimage.io package (.zip, folder or rdf.yaml)")
    parser.add_argument("--output", "-o", required=True, help="checkpoint to write, e.g. model.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import save_checkpoint
    from ..files import check_new_file
    from ..model_zoo import import_bioimageio

    check_new_file(args.output, args.overwrite)
    model, card = import_bioimageio(args.package)
    path = save_checkpoint(
        args.output,
        model,
        organelle=card.organelle,
        modality=card.modality,
        normalization=card.normalization,
        provenance_extra=card.provenance,
    )
    print(f"wrote {path}: {card.describe()}")
    return 0
