"""Meta-training with few-shot heads, with or without SLA, and evaluation on fixed episodes.

Modules:

* :mod:`.config` -- :class:`MetaTrainConfig`, :class:`EvalConfig` (one source of defaults), the
  modes and inferences;
* :mod:`.model` -- :class:`FewShotModel` (backbone + head + learnable logit scale; one backbone
  call per batch of episodes) and :func:`build_model`;
* :mod:`.methods` -- the losses and inferences of ``baseline``, ``da``, ``sla``, ``sla+sd``
  (:func:`run_episodes`; the exact formulas are in its module docstring);
* :mod:`.batches` -- datasets, on-device preprocessing, the global episode stream
  (:func:`episode_indices`, the one place with per-rank logic);
* :mod:`.train` -- ``train(cfg)`` (validation, ``best.pt``/``last.pt``, exact ``--resume``);
* :mod:`.evaluate` -- :func:`evaluate_episodes`, ``evaluate(eval_cfg)`` (95% CIs, paired comparisons);
* :mod:`fewshot_sla.plots` -- PNG curves and histograms (matplotlib, optional; shared with supervised);
* :mod:`.cli` -- the ``meta-train``, ``eval`` and ``plot`` subcommands;

The functions ``train`` and ``evaluate`` are not re-exported here (they would shadow their
modules): ``from fewshot_sla.meta.train import train``, ``from fewshot_sla.meta.evaluate import
evaluate``.
"""

from .batches import episode_indices
from .config import INFERENCES, MODES, REPORTED_INFERENCE, EvalConfig, MetaTrainConfig
from .evaluate import evaluate_episodes
from .methods import EpisodeOutput, LossSettings, run_episodes
from .model import FewShotModel, build_model
from .train import MetaTrainer, resume_config

__all__ = [
    "MODES",
    "INFERENCES",
    "REPORTED_INFERENCE",
    "MetaTrainConfig",
    "EvalConfig",
    "FewShotModel",
    "build_model",
    "LossSettings",
    "EpisodeOutput",
    "run_episodes",
    "episode_indices",
    "MetaTrainer",
    "resume_config",
    "evaluate_episodes",
]
