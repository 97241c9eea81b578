"""``lightmycells evaluate``: challenge metrics of predictions against a study's targets."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="score predictions with the LightMyCells metrics",
        description="Writes metrics_per_image.csv, metrics_summary.csv and metrics_summary.md.",
    )
    parser.add_argument(
        "--predictions", type=Path, required=True, help="folder written by `lightmycells predict`"
    )
    parser.add_argument("--study", type=Path, required=True, help="study folder with the targets")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the tables")
    parser.add_argument(
        "--normalization",
        default="percentile",
        help="how images are scaled before scoring: percentile (the challenge's) or none",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the tables of an earlier evaluation"
    )


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate, summarize, summary_markdown

    rows = evaluate(
        prediction_dir=args.predictions,
        study_dir=args.study,
        output_dir=args.output,
        normalization=args.normalization,
        overwrite=args.overwrite,
    )
    print(summary_markdown(summarize(rows), rows))
    print(f"tables written to {args.output}")
    return 0 if any(row["status"] == "ok" for row in rows) else 1
