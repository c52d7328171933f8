"""Datasets as in-memory uint8 tensors, one entry point, and batched augmentation.

>>> from fewshot_sla.data import get_dataset
>>> ds = get_dataset("omniglot", "../shared/data", "train")   # doctest: +SKIP
>>> ds.images.shape, ds.labels.shape, ds.class_names[0]          # doctest: +SKIP
(torch.Size([16040, 1, 28, 28]), torch.Size([16040]), 'Alphabet_of_the_Magi/character01')

Modules: ``base`` (ImageDataset, DATASET_INFO, errors), ``registry`` (get_dataset), one
module per dataset family (``omniglot``, ``miniimagenet``, ``tiered``, ``cifarfs``,
``cifar``, ``folder``), file handling (``archives``, ``pickles``, ``images``, ``arrays``,
``cache``, ``download``) and ``augment``.
"""

from .augment import AugmentConfig, BatchAugment, get_augmentation
from .base import (
    DATASET_INFO,
    DataError,
    DatasetInfo,
    DatasetNotFoundError,
    FewShotDataset,
    ImageDataset,
)
from .download import DownloadError
from .registry import dataset_info, get_dataset, list_datasets, register_dataset

__all__ = [
    "get_dataset",
    "list_datasets",
    "register_dataset",
    "dataset_info",
    "ImageDataset",
    "FewShotDataset",
    "DatasetInfo",
    "DATASET_INFO",
    "DataError",
    "DatasetNotFoundError",
    "DownloadError",
    "AugmentConfig",
    "BatchAugment",
    "get_augmentation",
]
