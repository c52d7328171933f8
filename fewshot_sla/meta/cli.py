"""Subcommands ``meta-train`` and ``eval`` of the ``fewshot-sla`` command::

    fewshot-sla meta-train --config omniglot_conv4_sla --data-root DATA/omniglot
    fewshot-sla eval --checkpoint RUN_SLA --compare RUN_BASELINE          # paired difference
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..cli_options import command, describe_configs, option, run_config
from ..config import build_config
from .config import EvalConfig, MetaTrainConfig, meta_config_names

__all__ = ["MetaTrainActions", "EvalShortcuts", "run_meta_train", "run_eval"]


@dataclass
class MetaTrainActions:
    """Where ``meta-train`` starts from: the defaults, a config, or a run to continue."""

    config: str | None = option(None, "named config in fewshot_sla/configs (see --list-configs) or a TOML file",
                                metavar="NAME_OR_FILE")
    resume: str | None = option(None, "continue the run in directory RUN from its last.pt (e.g. with a larger "
                                "--epochs)", metavar="RUN")
    list_configs: bool = option(False, "list the named configs and exit")


@dataclass
class EvalShortcuts:
    """Shortcuts adding an inference to ``--inferences``."""

    aggregate: bool = option(False, "report the aggregated (SLA+AG) inference")
    single: bool = option(False, "report the single (SLA+SI) inference")


@command("meta-train", MetaTrainActions, MetaTrainConfig,
         help="meta-train a backbone with a few-shot head (baseline, da, sla, sla+sd)",
         description="Meta-train a backbone with a few-shot head, with or without self-supervised label "
         "augmentation, then test the selected checkpoint (best.pt) on --test-episodes episodes as `fewshot-sla "
         "eval` would (RUN/test.json; the last line of output). Options override --config, which overrides the "
         "defaults.")
def run_meta_train(args: argparse.Namespace) -> int:
    from ..distributed import env_info
    from .train import resume_config, train

    act = build_config(MetaTrainActions, args)
    if act.list_configs:
        print("\n".join(describe_configs(meta_config_names())))
        return 0
    cfg = run_config(MetaTrainConfig, args, "meta-train", act.config, act.resume or None, resume_config)
    summary = train(cfg, resume=bool(act.resume))
    if not env_info().is_main:
        return 0
    best = summary["best"]
    if cfg.quiet:  # the lines that --quiet keeps
        score = "" if best.get("score") in (None, -float("inf")) else \
            f"best val {summary['reported_inference']} {100 * best['score']:.2f}% at epoch {best['epoch']}; "
        print(f"{score}run directory {summary['run_dir']}", flush=True)
    if "test_line" in summary:  # the last line: the final test of best.pt (RUN/test.json)
        print(summary["test_line"], flush=True)
    return 0


@command("eval", EvalConfig, EvalShortcuts, help="evaluate checkpoints on fixed episodes with 95%% confidence "
         "intervals", description="Evaluate a meta-trained checkpoint on fixed episodes (mean +- 1.96 "
         "std/sqrt(n)); --compare evaluates more checkpoints on the same episodes and reports paired differences.")
def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_report

    short = build_config(EvalShortcuts, args)
    extra = tuple(i for i, on in (("aggregated", short.aggregate), ("single", short.single)) if on)
    if extra:
        args.inferences = tuple(getattr(args, "inferences", ())) + extra
    # under torchrun every rank evaluates a share; rank 0 prints the table, before writing the JSON
    evaluate(build_config(EvalConfig, args), show=lambda report: print(format_report(report), flush=True))
    return 0
