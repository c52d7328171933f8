"""Meta-training of a backbone with a few-shot head on episodes, with or without SLA, and
evaluation on fixed episodes.

Modules: ``config`` (:class:`MetaTrainConfig`, :class:`EvalConfig`), ``model`` (:class:`FewShotModel`:
backbone + head + logit scale), ``methods`` (each mode's losses and inferences, :func:`run_episodes`),
``batches`` (datasets, preprocessing, the episode stream), ``train`` (the trainer, ``--resume``),
``evaluate`` (fixed episodes, 95% CIs, paired comparisons), ``cli`` (the subcommands).
``train`` and ``evaluate`` are not re-exported here (they would shadow their modules).
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
