"""``fewshot-sla supervised`` (also ``python -m fewshot_sla.supervised``): train, ``--resume RUN_DIR``,
``--evaluate CKPT`` or ``--ensemble CKPT CKPT ...``; options layer as ``SupervisedConfig`` defaults <
``--config`` (a TOML file or a named config, e.g. ``supervised_cifar10_lt100``) < explicit options.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from ..cli_options import command, option, run_config
from ..config import ConfigError, build_config, list_named_configs
from ..engine import resume_config
from .config import SupervisedConfig

__all__ = ["SupervisedActions", "run", "recipe_note"]


@dataclass
class SupervisedActions:
    """What ``supervised`` does: train (default), continue a run, evaluate or ensemble checkpoints."""

    config: str | None = option(None, "named config (supervised_*: fewshot-sla list) or a TOML file",
                                metavar="NAME_OR_TOML")
    resume: str | None = option(None, "continue the run in RUN_DIR from last.pt (exactly as if uninterrupted)",
                                metavar="RUN_DIR")
    evaluate: str | None = option(None, "evaluate a checkpoint (.pt or run directory, best.pt preferred) instead "
                                  "of training", metavar="CKPT")
    ensemble: tuple[str, ...] | None = option(None, "evaluate the average of the logits of several checkpoints",
                                              metavar="CKPT")
    split: str = option("test", "split for --evaluate/--ensemble", choices=("test", "val"))
    output: str | None = option(None, "also write the --evaluate/--ensemble results (or the training summary) "
                                "there", metavar="FILE.json")


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


@command("supervised", SupervisedActions, SupervisedConfig, description=__doc__,
         help="standard and long-tailed CIFAR training with SLA (baseline, da, mt, sla, sla+sd; ce, cb, ldam)")
def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write_text
    from ..rundir import to_jsonable
    from ..writable import check_writable_file, writing

    act = build_config(SupervisedActions, args)
    if sum(x is not None for x in (act.resume, act.evaluate, act.ensemble)) > 1:
        raise ConfigError("--resume, --evaluate and --ensemble are separate actions; pass one of them")
    if act.output:  # before training or evaluating: an unwritable --output is one line
        check_writable_file(act.output, "the results file", "pass another --output FILE")
    if act.evaluate is not None or act.ensemble is not None:
        from .evaluate import evaluate_checkpoints

        paths = [act.evaluate] if act.evaluate is not None else list(act.ensemble)
        rep = evaluate_checkpoints(paths, split=act.split, data_root=getattr(args, "data_root", None),
                                   device=getattr(args, "device", "auto"),
                                   batch_size=getattr(args, "eval_batch_size", None))
        title = f"{act.split} accuracy of " + (paths[0] if len(paths) == 1 else f"the ensemble of {len(paths)}")
        _print_report(title, rep)
        for m in rep.get("members") or ():
            print(f"  member {m['checkpoint']}: {m['primary']} {_fmt(m['accuracy'][m['primary']]).strip()}%")
        result = rep
    else:
        from ..distributed import env_info
        from .train import run_training

        cfg = run_config(SupervisedConfig, args, "supervised", act.config, act.resume, lambda run, opts: resume_config(
            SupervisedConfig, run, opts, reset={"stop_after": 0}))  # stop_after: per invocation
        note = None if act.resume else recipe_note(cfg, act.config)
        if note and env_info().is_main:
            print(note, file=sys.stderr)
        result = run_training(cfg, resume=act.resume is not None)
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
    if act.output:  # after the results are printed: a failed write loses nothing
        with writing(act.output, "the results file", "pass another --output FILE (the results are printed above)"):
            atomic_write_text(act.output, json.dumps(to_jsonable(result), indent=2) + "\n")
    return 0
