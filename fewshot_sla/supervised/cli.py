"""``fewshot-sla supervised`` (also ``python -m fewshot_sla.supervised``).

Four actions::

    fewshot-sla supervised [--config NAME] [--dataset cifar10] [--mode sla+sd] [...]   # train
    fewshot-sla supervised --resume RUN_DIR [--device cuda] [--stop-after K]          # continue
    fewshot-sla supervised --evaluate CKPT [--split test|val] [--data-root DIR]       # evaluate
    fewshot-sla supervised --ensemble CKPT CKPT [...]                                 # logit ensemble

Options layer as ``SupervisedConfig`` defaults < ``--config`` (a TOML file or a named
config in ``fewshot_sla/configs``, e.g. ``supervised_cifar10_lt100``) < explicit options.
The defaults are the standard-CIFAR recipe (80,000 iterations). ``--imbalance-ratio R``
changes the training set only: without ``--config`` a long-tailed run keeps that recipe and
prints a one-line note naming the config of Cao et al.'s 200-epoch LDAM-DRW recipe
(``--config supervised_cifar10_lt100``, ``..._lt10``, ``supervised_cifar100_lt100``, ...).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..config import (
    ConfigError,
    add_dataclass_arguments,
    build_config,
    canonical_options,
    check_config_command,
    list_named_configs,
    option_names,
)
from ..engine import resume_config
from .config import SupervisedConfig

__all__ = ["add_parser", "configure_parser", "run", "recipe_note", "RESUME_OVERRIDABLE"]

# options that may differ when a run is resumed (they do not change what is computed; for
# ``accumulate``: as long as processes x accumulate stays the same, e.g. 2 GPUs -> 1 GPU x 2)
RESUME_OVERRIDABLE = ("device", "quiet", "plot", "stop_after", "eval_batch_size", "data_root", "cache_dir",
                      "dist_timeout", "accumulate", "num_threads", "deterministic")


def configure_parser(p: argparse.ArgumentParser) -> None:
    actions = p.add_argument_group("actions (default: train)")
    actions.add_argument("--config", default=None, metavar="NAME_OR_TOML",
                         help="named config (" + ", ".join(n for n in list_named_configs()
                                                           if n.startswith("supervised")) + ") or a TOML file")
    actions.add_argument("--resume", default=None, metavar="RUN_DIR",
                         help="continue the run in RUN_DIR from last.pt (exactly as if uninterrupted)")
    actions.add_argument("--evaluate", default=None, metavar="CKPT",
                         help="evaluate a checkpoint (.pt or run directory, best.pt preferred) instead of training")
    actions.add_argument("--ensemble", nargs="+", default=None, metavar="CKPT",
                         help="evaluate the average of the logits of several checkpoints")
    actions.add_argument("--split", default="test", choices=("test", "val"), help="split for --evaluate/--ensemble")
    actions.add_argument("--output", default=None, metavar="FILE.json",
                         help="also write the --evaluate/--ensemble results (or the training summary) there")
    options = p.add_argument_group("run options (SupervisedConfig)")
    add_dataclass_arguments(options, SupervisedConfig)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``supervised`` on the ``fewshot-sla`` command."""
    p = subparsers.add_parser(
        "supervised",
        help="standard and long-tailed CIFAR training with SLA (baseline, da, mt, sla, sla+sd; ce, cb, ldam)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(p)
    p.set_defaults(func=run)
    return p


def _explicit(args: argparse.Namespace) -> dict:
    names = option_names(SupervisedConfig)
    return {k: v for k, v in vars(args).items() if k in names}


def _resume_config(args: argparse.Namespace) -> SupervisedConfig:
    if args.config:
        raise ConfigError("--config cannot be combined with --resume: the run keeps its saved configuration")
    explicit = canonical_options(SupervisedConfig, _explicit(args))
    # stop_after is per invocation: resuming runs to the end unless told otherwise
    return resume_config(SupervisedConfig, args.resume, explicit, RESUME_OVERRIDABLE, reset={"stop_after": 0})


def recipe_note(cfg: SupervisedConfig, config: str | None) -> str | None:
    """The one-line note for a long-tailed run started without ``--config`` (it trains with the
    standard recipe, not Cao et al.'s); ``None`` otherwise."""
    if config is not None or not cfg.long_tailed:
        return None
    lt = sorted(n for n in list_named_configs() if n.startswith(f"supervised_{cfg.dataset}_lt"))
    name = f"supervised_{cfg.dataset}_lt{cfg.imbalance_ratio:g}"
    use = name if name in lt else f"a copy of {lt[-1]}.toml with imbalance_ratio = {cfg.imbalance_ratio:g}"
    d = SupervisedConfig()
    return (f"note: --imbalance-ratio {cfg.imbalance_ratio:g} without --config trains with the standard-CIFAR "
            f"recipe ({d.iterations:,} iterations, weight decay {d.weight_decay:g}, no warm-up) and the options "
            f"given; for Cao et al.'s LDAM-DRW recipe (200 epochs, 5 warm-up epochs, weight decay 2e-4) pass "
            f"--config {use}")


def _fmt(v) -> str:
    return "-" if v is None else f"{100 * v:6.2f}"


def _print_report(title: str, rep: dict) -> None:
    print(title)
    for name, acc in rep.get("table", {}).items():
        print(f"  {name:<28s} {_fmt(acc)}%")
    acc = rep.get("accuracy", {})
    if acc:
        print("  inferences: " + ", ".join(f"{k} {_fmt(v).strip()}%" for k, v in acc.items()))
    groups = rep.get("groups")
    if groups:
        for name, g in groups.items():
            print(f"  {name:<11s} overall {_fmt(g['overall'])}  many {_fmt(g['many'])}  "
                  f"medium {_fmt(g['medium'])}  few {_fmt(g['few'])}")


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write_text
    from ..rundir import to_jsonable

    n_actions = sum(x is not None for x in (args.resume, args.evaluate, args.ensemble))
    if n_actions > 1:
        raise ConfigError("--resume, --evaluate and --ensemble are separate actions; pass one of them")
    if args.evaluate is not None or args.ensemble is not None:
        from .evaluate import evaluate_checkpoints

        explicit = _explicit(args)
        paths = [args.evaluate] if args.evaluate is not None else list(args.ensemble)
        rep = evaluate_checkpoints(
            paths, split=args.split, data_root=explicit.get("data_root"), device=explicit.get("device", "auto"),
            batch_size=explicit.get("eval_batch_size"),
        )
        title = f"{args.split} accuracy of " + (paths[0] if len(paths) == 1 else f"the ensemble of {len(paths)}")
        _print_report(title, rep)
        if rep.get("members"):
            for m in rep["members"]:
                print(f"  member {m['checkpoint']}: {m['primary']} {_fmt(m['accuracy'][m['primary']]).strip()}%")
        result = rep
    else:
        from ..distributed import env_info
        from .train import run_training

        if args.resume is not None:
            cfg = _resume_config(args)
        else:
            check_config_command(args.config, "supervised")
            cfg = build_config(SupervisedConfig, args, config=args.config)
            note = recipe_note(cfg, args.config)
            if note and env_info().is_main:
                print(note, file=sys.stderr)
        result = run_training(cfg, resume=args.resume is not None)
        if not env_info().is_main:  # under torchrun rank 0 reports
            return 0
        if "stopped_at" in result:
            print(result["message"])
        else:
            print(f"run directory: {result['run_dir']} (selected iteration {result['best_iteration']}, "
                  f"{result['selection']})")
            if result["test"] is None:
                print(f"{result['dataset']} is a few-shot benchmark: no test images of the training classes; "
                      f"evaluate few-shot episodes with fewshot-sla eval --checkpoint {result['run_dir']}")
            else:
                _print_report("test accuracy", {**result["test"], "table": result["table"]})
    if args.output:
        atomic_write_text(args.output, json.dumps(to_jsonable(result), indent=2) + "\n")
    return 0
