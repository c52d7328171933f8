"""The ``fewshot-sla`` command: one entry point with subcommands.

Each pipeline's subcommands live with the code they drive and register themselves here:
``meta-train`` and ``eval`` (``fewshot_sla.meta.cli``), ``supervised``
(``fewshot_sla.supervised.cli``); ``list`` and ``plot`` (shared by both) are defined here.
Errors in user input are printed as one line
(``fewshot-sla: error: ...``) with exit status 2, never as a traceback. Under ``torchrun``
(``torchrun --nproc-per-node K -m fewshot_sla.cli meta-train|eval|supervised ...``) the same
commands run distributed; see :mod:`fewshot_sla.distributed`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

# modules with a function ``add_parser(subparsers)`` registering their subcommands; each
# subcommand parser sets ``func`` (``func(args) -> int``) with ``set_defaults``
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "fewshot_sla.meta.cli",
    "fewshot_sla.supervised.cli",
    "fewshot_sla.predict.cli",
)


def _list(args: argparse.Namespace) -> int:
    """Print what can be named on the command line."""
    from .backbones import list_backbones
    from .config import list_named_configs
    from .data import list_datasets
    from .heads import list_heads
    from .transforms import list_transform_sets

    for title, names in (
        ("datasets", list_datasets()),
        ("backbones", list_backbones()),
        ("heads", list_heads()),
        ("transform sets", list_transform_sets()),
        ("named configs (--config NAME)", list_named_configs()),
    ):
        print(f"{title}:\n  " + "\n  ".join(names))
    return 0


def _plot(args: argparse.Namespace) -> int:
    """Draw curves (a run directory of either pipeline) and histograms (evaluation JSON)."""
    from .plots import plot_paths

    for p in plot_paths(args.paths, args.output):
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fewshot-sla",
        description="Few-shot meta-learning and supervised learning with Self-supervised Label Augmentation.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show full Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("list", help="list datasets, backbones, heads, transform sets and named configs").set_defaults(
        func=_list
    )
    pl = sub.add_parser(
        "plot",
        help="draw training/validation curves and per-episode accuracy histograms (needs matplotlib)",
        description="PATH is a run directory of meta-train or supervised (curves from metrics.jsonl, "
        "histograms of its eval_*.json) or an evaluation JSON file (histogram).",
    )
    pl.add_argument("paths", nargs="+", metavar="PATH", help="run directories and/or evaluation JSON files")
    pl.add_argument("--output", default=None, metavar="DIR", help="folder of the PNG files (default: next to PATH)")
    pl.set_defaults(func=_plot)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # subcommand not built yet
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .atomic import NoSpaceError
    from .config import ConfigError
    from .data.download import DownloadError
    from .distributed import cleanup, env_info

    parser = build_parser()
    args = parser.parse_args(argv)
    info = env_info()  # under torchrun each rank prints its own error, tagged with its rank
    where = f" [rank {info.rank}/{info.world_size}]" if info.enabled else ""
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError, ImportError, DownloadError, NoSpaceError) as e:
        if getattr(args, "traceback", False):
            raise
        parser.exit(2, f"fewshot-sla {args.command}{where}: error: {e}\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        cleanup()  # end the torchrun process group (a no-op otherwise)


if __name__ == "__main__":
    sys.exit(main())
