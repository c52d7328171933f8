"""Subcommands ``meta-train`` and ``eval`` of the ``fewshot-sla`` command.

Examples::

    fewshot-sla meta-train --config omniglot_conv4_sla --data-root DATA/omniglot
    fewshot-sla meta-train --dataset omniglot --data-root DATA --backbone conv4 --head protonet \\
        --mode sla --transforms rotation --n-way 5 --k-shot 1 --eval-shot 1 --epochs 10
    fewshot-sla meta-train --resume runs/omniglot-conv4-protonet-sla-20240101-120000 --epochs 20
    fewshot-sla eval --checkpoint RUN/best.pt --episodes 1000 --n-way 5 --k-shot 1
    fewshot-sla eval --checkpoint RUN_SLA --compare RUN_BASELINE          # paired difference

``python train_meta.py ...`` and ``python eval_episodes.py ...`` run the same code.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..config import (
    CONFIG_DIR,
    ConfigError,
    add_dataclass_arguments,
    build_config,
    canonical_options,
    check_config_command,
    option_names,
)
from .config import EvalConfig, MetaTrainConfig, meta_config_names

__all__ = ["add_parser", "run_meta_train", "run_eval"]


def _config_descriptions() -> list[tuple[str, str]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    out = []
    for name in meta_config_names():
        try:
            desc = tomllib.loads((CONFIG_DIR / f"{name}.toml").read_text()).get("description", "")
        except Exception:  # noqa: BLE001 - listing must not fail on one bad file
            desc = "(unreadable)"
        out.append((name, " ".join(desc.split())))
    return out


def run_meta_train(args: argparse.Namespace) -> int:
    from .train import resume_config, train

    if getattr(args, "list_configs", False):
        for name, desc in _config_descriptions():
            print(f"{name:<36} {desc}")
        return 0
    names = option_names(MetaTrainConfig)
    explicit = {k: v for k, v in vars(args).items() if k in names}
    if args.resume:
        if args.config:
            raise ConfigError("--config cannot be combined with --resume (the run's own config is used)")
        cfg = resume_config(args.resume, canonical_options(MetaTrainConfig, explicit))
        train(cfg, resume=True)
    else:
        check_config_command(args.config, "meta-train")
        cfg = build_config(MetaTrainConfig, explicit, config=args.config)
        train(cfg)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..distributed import env_info
    from .evaluate import evaluate, format_report

    names = {f.name for f in dataclasses.fields(EvalConfig)}
    explicit = {k: v for k, v in vars(args).items() if k in names}
    shortcuts = [i for i, flag in (("aggregated", "aggregate"), ("single", "single")) if getattr(args, flag, False)]
    if shortcuts:
        explicit["inferences"] = tuple(explicit.get("inferences", ())) + tuple(shortcuts)
    cfg = build_config(EvalConfig, explicit)
    report = evaluate(cfg)
    if env_info().is_main:  # under torchrun every rank evaluates a share; rank 0 reports
        print(format_report(report))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``meta-train`` and ``eval`` on the ``fewshot-sla`` parser."""
    p = subparsers.add_parser(
        "meta-train",
        help="meta-train a backbone with a few-shot head (baseline, da, sla, sla+sd)",
        description="Meta-train a backbone with a few-shot head, with or without self-supervised label "
        "augmentation. Options override --config, which overrides the defaults.",
    )
    p.add_argument("--config", default=None, metavar="NAME_OR_FILE",
                   help="named config in fewshot_sla/configs (see --list-configs) or a TOML file")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue the run in directory RUN from its last.pt (e.g. with a larger --epochs)")
    p.add_argument("--list-configs", action="store_true", help="list the named configs and exit")
    add_dataclass_arguments(p, MetaTrainConfig)
    p.set_defaults(func=run_meta_train)

    e = subparsers.add_parser(
        "eval",
        help="evaluate checkpoints on fixed episodes with 95%% confidence intervals",
        description="Evaluate a meta-trained checkpoint on fixed episodes (mean +- 1.96 std/sqrt(n)); "
        "--compare evaluates more checkpoints on the same episodes and reports paired differences.",
    )
    add_dataclass_arguments(e, EvalConfig)
    e.add_argument("--aggregate", action="store_true", help="report the aggregated (SLA+AG) inference")
    e.add_argument("--single", action="store_true", help="report the single (SLA+SI) inference")
    e.set_defaults(func=run_eval)
