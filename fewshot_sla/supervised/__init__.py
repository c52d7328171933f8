"""Standard and long-tailed CIFAR pipelines of SLA (paper Tables 1, 3 and 7).

Modes ``baseline``, ``da``, ``mt``, ``sla``, ``sla+sd`` on any transform set; long-tailed
training sets (Cao et al.'s exponential profile) with CE, class-balanced (CB-RW) and LDAM
losses and deferred re-weighting (DRW). Entry points: ``fewshot-sla supervised`` and
``python -m fewshot_sla.supervised``; in Python :func:`run_training` and
:func:`evaluate_checkpoints`.

Modules: ``config`` (:class:`SupervisedConfig`), ``data`` (a run's images and preprocessing),
``model`` (heads on a shared backbone), ``losses`` (the per-mode losses, CB weights, LDAM
margins), ``longtail`` (class counts and subsets, shot groups), ``train`` (batch plan, schedule,
loop, checkpoints), ``evaluate`` (inferences, reports, ensembles), ``cli``.
"""

from .config import SupervisedConfig
from .data import SupervisedData, load_data, prepare_data
from .evaluate import accuracy_report, evaluate_checkpoints, predict, table_entries
from .longtail import longtail_counts, longtail_indices, shot_groups
from .losses import class_balanced_weights, ldam_margins, supervised_loss
from .model import SupervisedModel, build_model
from .train import BatchPlan, run_training

__all__ = [
    "SupervisedConfig",
    "SupervisedModel",
    "SupervisedData",
    "BatchPlan",
    "build_model",
    "load_data",
    "prepare_data",
    "run_training",
    "supervised_loss",
    "class_balanced_weights",
    "ldam_margins",
    "longtail_counts",
    "longtail_indices",
    "shot_groups",
    "predict",
    "accuracy_report",
    "table_entries",
    "evaluate_checkpoints",
]
