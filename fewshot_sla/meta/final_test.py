"""Meta-training's final test: ``best.pt`` scored by ``fewshot-sla eval`` itself, at the end of the run.

:func:`final_test_config` is the :class:`~.config.EvalConfig` of that evaluation: ``test_episodes``
episodes of ``test_split`` (with ``test_dataset_options`` over the run's dataset options), the
validation shape (``eval_way``-way ``eval_shot``-shot, ``eval_query`` queries per class), seed 0,
every inference of the mode, written to ``RUN/test.json``. :func:`eval_command` is the command
that computes the same report, episode for episode; :func:`result_line` is the run's last line.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from ..config import options_text
from .config import EvalConfig, MetaTrainConfig

__all__ = ["TEST_FILE", "TEST_SEED", "final_test_config", "eval_command", "result_line"]

#: the report of the final test, in the run directory
TEST_FILE = "test.json"
#: seed of the final test's episodes: ``fewshot-sla eval``'s default, so that both draw the same episodes
TEST_SEED = EvalConfig.seed


def final_test_config(cfg: MetaTrainConfig, checkpoint: str | Path, output: str | Path, quiet: bool) -> EvalConfig:
    """The ``fewshot-sla eval`` options of ``cfg``'s final test of ``checkpoint``, written to ``output``."""
    return EvalConfig(checkpoint=str(checkpoint), split=cfg.test_split, dataset_options=dict(cfg.test_dataset_options),
                      episodes=cfg.test_episodes, n_way=cfg.eval_way, k_shot=cfg.eval_shot, n_query=cfg.eval_query,
                      seed=TEST_SEED, tasks_per_batch=cfg.eval_tasks_per_batch, device=cfg.device, amp=cfg.amp,
                      channels_last=cfg.channels_last, num_threads=cfg.num_threads, output=str(output), quiet=quiet)


def eval_command(ecfg: EvalConfig) -> str:
    """The ``fewshot-sla eval`` command line that evaluates ``ecfg.checkpoint`` on the same episodes."""
    words = ["fewshot-sla", "eval", "--checkpoint", ecfg.checkpoint, "--split", ecfg.split, "--episodes",
             str(ecfg.episodes), "--n-way", str(ecfg.n_way), "--k-shot", str(ecfg.k_shot), "--n-query",
             str(ecfg.n_query), "--seed", str(ecfg.seed)]
    if ecfg.dataset_options:
        words += ["--dataset-options", options_text(ecfg.dataset_options)]
    if ecfg.tasks_per_batch != EvalConfig.tasks_per_batch:
        words += ["--tasks-per-batch", str(ecfg.tasks_per_batch)]
    if ecfg.amp != EvalConfig.amp:
        words += ["--amp", ecfg.amp]
    if ecfg.channels_last:
        words.append("--channels-last")
    return shlex.join(words)


def result_line(report: dict[str, Any]) -> str:
    """``test <inference> <mean> +- <ci95>% (<n> test episodes, <N>-way <K>-shot, seed <s>): <test.json>``,
    of the checkpoint's reported inference."""
    model = report["models"][0]
    inference = model["reported"] if model["reported"] in model["results"] else next(iter(model["results"]))
    r = model["results"][inference]
    return (f"test {inference} {100 * r['mean']:.2f} +- {100 * r['ci95']:.2f}% ({report['episodes']} {report['split']} "
            f"episodes, {report['n_way']}-way {report['k_shot']}-shot, seed {report['seed']}): {report['output']}")
