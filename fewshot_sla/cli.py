"""The ``fewshot-sla`` command: subcommands add themselves to
:data:`~fewshot_sla.cli_options.COMMANDS` when their module is imported; ``list`` and ``plot`` live
here. Bad input is one line with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from . import __version__
from .cli_options import COMMANDS, Parser, add_command, command, describe_configs, option
from .devices import check_device
from .hints import only_options
from .meta import cli as _meta_cli  # noqa: F401 - adds meta-train and eval
from .predict import cli as _predict_cli  # noqa: F401 - adds predict and export
from .supervised import cli as _supervised_cli  # noqa: F401 - adds supervised
from .writable import os_error_line


@dataclass
class PlotOptions:
    """What ``plot`` draws, and where."""

    paths: tuple[str, ...] = option(help="run directories and/or evaluation JSON files", positional=True,
                                    metavar="PATH")
    output: str | None = option(None, "folder of the PNG files (default: next to PATH)", metavar="DIR")


@command("list", help="list datasets, backbones, heads, transform sets and named configs")
def run_list(args: argparse.Namespace) -> int:
    """Print what can be named on the command line, and each named config's description."""
    from . import backbones, heads, transforms
    from .config import list_named_configs

    for title, names in (("datasets (the files each expects under --data-root DIR)", describe_datasets()),
                         ("backbones", backbones.list_backbones()),
                         ("heads", heads.list_heads()), ("transform sets", transforms.list_transform_sets()),
                         ("named configs (--config NAME)", describe_configs(list_named_configs()))):
        print(f"{title}:\n  " + "\n  ".join(names))
    return 0


def describe_datasets() -> list[str]:
    """``name  layout`` per registered dataset (the files it expects under its data root, one line)."""
    from .data import dataset_info, list_datasets

    return [f"{name:<16} {dataset_info(name).layout}".rstrip() for name in list_datasets()]


@command("plot", PlotOptions, help="draw training/validation curves and per-episode accuracy histograms "
         "(needs matplotlib)", description="PATH is a run directory of meta-train or supervised (curves from "
         "metrics.jsonl, histograms of its eval_*.json) or an evaluation JSON file (histogram).")
def run_plot(args: argparse.Namespace) -> int:
    from .plots import plot_paths

    for p in plot_paths(args.paths, getattr(args, "output", None)):
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fewshot-sla", description="Few-shot meta-learning and supervised learning with "
                    "Self-supervised Label Augmentation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show full Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        add_command(sub, cmd)
    return parser


def _command_options(parser: argparse.ArgumentParser, name: str) -> set[str]:
    """The option strings (``--data-root``, ...) of subcommand ``name``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return set(action.choices[name]._option_string_actions)
    return set()


def main(argv: Sequence[str] | None = None) -> int:
    from .atomic import NoSpaceError
    from .config import ConfigError
    from .data.download import DownloadError
    from .distributed import cleanup, env_info
    from .engine.interrupt import RunInterrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    info = env_info()  # under torchrun each rank prints its own error, tagged with its rank
    where = f" [rank {info.rank}/{info.world_size}]" if info.enabled else ""
    try:
        if hasattr(args, "device"):
            check_device(args.device)  # before any work
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError, ImportError, DownloadError, NoSpaceError) as e:
        if getattr(args, "traceback", False):
            raise
        message = only_options(str(e), _command_options(parser, args.command))  # hints of this command only
        parser.exit(2, f"fewshot-sla {args.command}{where}: error: {message}\n")
    except OSError as e:  # a write or read failing late (permissions, read-only disk): one line naming the path
        if getattr(args, "traceback", False):
            raise
        parser.exit(2, f"fewshot-sla {args.command}{where}: error: {os_error_line(e)}\n")
    except RunInterrupted as e:  # SIGINT/SIGTERM during training: last.pt written at the step
        if info.is_main:
            print(e, file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        cleanup()  # end the torchrun process group (a no-op otherwise)


if __name__ == "__main__":
    sys.exit(main())
