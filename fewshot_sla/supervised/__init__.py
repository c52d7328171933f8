"""Standard and long-tailed CIFAR pipelines of SLA (paper Tables 1, 3 and 7): modes ``baseline``,
``da``, ``mt``, ``sla``, ``sla+sd``; CE, CB-RW and LDAM losses with DRW. Entry points: ``fewshot-sla
supervised``, ``python -m fewshot_sla.supervised``, :func:`run_training`, :func:`evaluate_checkpoints`.
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
