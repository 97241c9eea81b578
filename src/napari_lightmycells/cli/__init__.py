"""``lightmycells`` command line: thin layer over the core API (one module per sub-command)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import LightMyCellsError, StopRequested
from .progress import set_log_level

# Sub-command name -> module in this package exposing ``add_parser(subparsers)`` and ``run(args)``.
COMMANDS = {
    "models": "models",
    "pretrain": "pretrain",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "study": "study",
    "demo": "demo",
    "export": "export",
    "import": "import_model",
}


OUT_OF_MEMORY_HINT = (
    "Lower --batch-size, --crop-size or --tile-size, use --accumulate N, or --precision bf16; "
    "checkpoints already written are kept (resume with --resume RUN/last.pt)."
)


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="lightmycells",
        description="Predict fluorescence organelles from label-free microscopy (LightMyCells UNETR models).",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="also debug messages")
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="no progress: only warnings, errors and results"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{module_name}":
                raise
            continue
        module.add_parser(sub)
        modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    set_log_level(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return modules[args.command].run(args) or 0
    except LightMyCellsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file or folder the checks could not foresee (disk full, permissions...)
        if args.verbose:
            raise
        print(f"error: {error} (rerun with -v for the traceback)", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, StopRequested):
        print("interrupted: the last checkpoint written is kept.", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as error:
        from ..devices import is_out_of_memory

        if not is_out_of_memory(error):
            raise
        print(f"error: out of memory ({error}). {OUT_OF_MEMORY_HINT}", file=sys.stderr)
        return 2
