"""Meta-training of a backbone with a few-shot head on episodes, with or without SLA, and
evaluation on fixed episodes.

``config`` (configs, modes), ``model`` (:class:`FewShotModel`), ``methods`` (losses and
inferences), ``batches`` (data and the episode stream), ``train``, ``evaluate`` and ``cli``.
``train`` and ``evaluate`` are imported from their modules (not re-exported: they would shadow them).
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
