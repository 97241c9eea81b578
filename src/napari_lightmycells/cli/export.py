"""``lightmycells export``: write a UNETR checkpoint as a BioImage Model Zoo (bioimage.io) package."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    parser = sub.add_parser("export", help="export a checkpoint as a bioimage.io model package (.zip)")
    parser.add_argument("checkpoint", help="UNETR checkpoint (.pt, ours or BiaPy's)")
    parser.add_argument("--output", "-o", required=True, help="package to write, e.g. model.zip")
    parser.add_argument("--name", help="model name (default: from organelle and modality)")
    parser.add_argument("--author", action="append", dest="authors", help="author name (repeatable)")
    parser.add_argument("--cover", help="cover image (default: input and prediction side by side)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package")
    parser.add_argument("--license", default="BSD-3-Clause", help="SPDX license id (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from ..model_zoo import export_bioimageio

    path = export_bioimageio(
        args.checkpoint,
        args.output,
        name=args.name,
        authors=args.authors,
        cover=args.cover,
        license=args.license,
        overwrite=args.overwrite,
    )
    print(f"wrote {path}")
    return 0
